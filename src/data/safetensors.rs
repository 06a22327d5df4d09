//! Data in safetensors: `x` (f32 [N, F]) and `y` (f32 [N, K] targets, or integer class labels
//! `[N]` in i64, i32 or u8).

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::Dataset;
use crate::error::{KilnError, Result};

/// Reads `x` and `y` from a safetensors file.
pub fn read(path: &Path) -> Result<Dataset> {
    let bytes = crate::weights::read_input(path)?;
    parse(&path.display().to_string(), &bytes)
}

/// Parses safetensors bytes; `source` names them in errors.
pub fn parse(source: &str, bytes: &[u8]) -> Result<Dataset> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| KilnError::file(source, format!("not a valid safetensors file: {e}")))?;
    let tensor = |name: &str| {
        st.tensor(name).map_err(|_| {
            KilnError::file(
                source,
                format!("no tensor `{name}` (it has: {})", st.names().join(", ")),
            )
        })
    };
    let x = tensor("x")?;
    let (rows, features) = match (x.dtype(), x.shape()) {
        (Dtype::F32, &[n, f]) => (n, f),
        (dtype, shape) => {
            return Err(KilnError::file(
                source,
                format!("`x` must be f32 [N, F], it is {dtype:?} {shape:?}"),
            ));
        }
    };
    let y = tensor("y")?;
    let (targets, values): (usize, Vec<f32>) = match (y.dtype(), y.shape()) {
        (Dtype::F32, &[n]) if n == rows => (1, le_f32(y.data())),
        (Dtype::F32, &[n, k]) if n == rows => (k, le_f32(y.data())),
        (Dtype::I64, &[n]) if n == rows => (
            1,
            y.data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
        ),
        (Dtype::I32, &[n]) if n == rows => (
            1,
            y.data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
        ),
        (Dtype::U8, &[n]) if n == rows => (1, y.data().iter().map(|&b| b as f32).collect()),
        (dtype, shape) => {
            return Err(KilnError::file(
                source,
                format!(
                    "`y` must be f32 [{rows}] or [{rows}, K], or i64/i32/u8 labels [{rows}]; it is {dtype:?} {shape:?}"
                ),
            ));
        }
    };
    Dataset::new(source, features, le_f32(x.data()), targets, values)
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(x: (&[f32], Vec<usize>), y: (Dtype, &[u8], Vec<usize>)) -> Vec<u8> {
        let xb: Vec<u8> = x.0.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = [
            ("x", TensorView::new(Dtype::F32, x.1, &xb).unwrap()),
            ("y", TensorView::new(y.0, y.2, y.1).unwrap()),
        ];
        safetensors::serialize(tensors, None).unwrap()
    }

    #[test]
    fn reads_values_and_integer_labels() {
        let labels: Vec<u8> = [3i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = file(
            (&[1.0, 2.0, 3.0, 4.0], vec![2, 2]),
            (Dtype::I64, &labels, vec![2]),
        );
        let d = parse("d.safetensors", &bytes).unwrap();
        assert_eq!((d.features, d.targets, d.y.clone()), (2, 1, vec![3.0, 1.0]));
        let d = parse(
            "u.safetensors",
            &file((&[1.0, 2.0], vec![2, 1]), (Dtype::U8, &[7, 9], vec![2])),
        )
        .unwrap();
        assert_eq!(d.y, [7.0, 9.0]);
    }

    #[test]
    fn broken_files_are_errors_naming_the_problem() {
        let ys: Vec<u8> = [0.5f32, 1.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = file(
            (&[1.0, 2.0, 3.0, 4.0], vec![2, 2]),
            (Dtype::F32, &ys, vec![2]),
        );
        let e = parse("t.safetensors", &bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.safetensors: not a valid safetensors file"),
            "{e}"
        );
        let mut corrupt = bytes.clone();
        corrupt[0] = 0xff;
        assert!(parse("c.safetensors", &corrupt).is_err());
        let e = parse(
            "s.safetensors",
            &file((&[1.0, 2.0, 3.0, 4.0], vec![4]), (Dtype::F32, &ys, vec![2])),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`x` must be f32 [N, F]"), "{e}");
        let e = parse(
            "r.safetensors",
            &file((&[1.0, 2.0, 3.0], vec![3, 1]), (Dtype::F32, &ys, vec![2])),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`y` must be f32 [3]"), "{e}");
    }
}
