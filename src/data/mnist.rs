//! MNIST in its IDX files (raw or gzipped), for users who have them:
//! `train-images-idx3-ubyte` (magic 0x803, u8 [N, 28, 28]) and `train-labels-idx1-ubyte`
//! (magic 0x801, u8 `[N]`), and the test split's `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte`; the names with a dot before `idx` (`train-images.idx3-ubyte`, as
//! some downloads spell them) are found too. Pixels stay 0..255; `normalize = "standard"`
//! scales them.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{KilnError, Result};

/// Which files of an MNIST directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-*`: 60,000 rows.
    Train,
    /// `t10k-*`: the 10,000 rows every MNIST result is reported on.
    Test,
}

/// Reads the images and labels of one split from a directory.
pub fn read_dir(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (dims, pixels) = read_idx(&images, 0x803)?;
    let (ldims, labels_raw) = read_idx(&labels, 0x801)?;
    if dims.len() != 3 || ldims.len() != 1 || dims[0] != ldims[0] {
        return Err(KilnError::file(
            dir,
            format!(
                "images {dims:?} and labels {ldims:?} do not match (expected [N, rows, cols] and [N])"
            ),
        ));
    }
    let features = dims[1] * dims[2];
    let x = pixels.iter().map(|&p| p as f32).collect();
    let y = labels_raw.iter().map(|&l| l as f32).collect();
    Dataset::new(dir.display().to_string(), features, x, 1, y)
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
    .ok_or_else(|| {
        KilnError::file(
            dir,
            format!("no {stem} (or {stem}.gz, or {dotted}) in this directory"),
        )
    })
}

/// An IDX file of u8 data: its dimensions and its bytes.
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = crate::weights::read_input(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        // Deflate expands at most about 1032×: more than that is not a real IDX file, and
        // reading it all could exhaust memory.
        let cap = (raw.len() as u64)
            .saturating_mul(1100)
            .saturating_add(1 << 20);
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(&raw[..]);
        let mut read = |n: u64, out: &mut Vec<u8>| {
            (&mut decoder)
                .take(n)
                .read_to_end(out)
                .map_err(|e| KilnError::file(path, format!("gzip: {e}")))
        };
        // The header says how many bytes follow: no more than those and one past them (which
        // `parse_idx` reports as trailing) are expanded, whatever the stream would give.
        read(4, &mut out)?;
        let dims = out.get(3).copied().unwrap_or(0) as u64;
        read(4 * dims, &mut out)?;
        let declared = out
            .get(4..)
            .filter(|d| d.len() as u64 == 4 * dims)
            .and_then(|d| {
                d.chunks(4).try_fold(1u64, |n, c| {
                    n.checked_mul(u32::from_be_bytes(c.try_into().ok()?) as u64)
                })
            });
        let header = out.len() as u64;
        read(declared.unwrap_or(cap).min(cap).saturating_add(1), &mut out)?;
        let body = out.len() as u64 - header;
        if let Some(n) = declared.filter(|&n| body > n && n < cap) {
            return Err(KilnError::file(
                path,
                format!(
                    "gzip: its data goes on past the {n} bytes its header declares (byte {}); \
                     an idx file ends with its data",
                    header + n
                ),
            ));
        }
        if body > cap {
            return Err(KilnError::file(
                path,
                format!("gzip: expands past {cap} bytes, more than any IDX file of its size"),
            ));
        }
        out
    } else {
        raw
    };
    parse_idx(&path.display().to_string(), &bytes, magic)
}

/// Parses IDX bytes of u8 data with the given magic number; errors name the byte offset.
pub fn parse_idx(source: &str, bytes: &[u8], magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let err = |what: String| KilnError::file(source, what);
    let word = |at: usize| -> Result<u32> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            .ok_or_else(|| {
                err(format!(
                    "truncated at byte {}: the header needs {} bytes",
                    bytes.len(),
                    at + 4
                ))
            })
    };
    let found = word(0)?;
    if found != magic {
        return Err(err(format!(
            "byte 0: magic number {found:#x}, expected {magic:#x} (u8 data, {} dimensions)",
            magic & 0xff
        )));
    }
    let ndims = (magic & 0xff) as usize;
    let dims = (0..ndims)
        .map(|i| word(4 + 4 * i).map(|d| d as usize))
        .collect::<Result<Vec<_>>>()?;
    let start = 4 + 4 * ndims;
    let len = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            err(format!(
                "dimensions {dims:?} are more bytes than can be counted"
            ))
        })?;
    let data = bytes.get(start..start.saturating_add(len)).ok_or_else(|| {
        err(format!(
            "truncated at byte {}: dimensions {dims:?} need {} bytes of data from byte {start}",
            bytes.len(),
            len
        ))
    })?;
    let end = start + len;
    if bytes.len() > end {
        // More data than the header declares: a file cut and joined wrongly, or the wrong
        // dimensions; either way not the data set the header describes.
        return Err(err(format!(
            "{} bytes after the data end at byte {end} (dimensions {dims:?}); an idx file ends with its data",
            bytes.len() - end
        )));
    }
    Ok((dims, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend(data);
        b
    }

    #[test]
    fn reads_images_and_labels_raw_and_gzipped() {
        let dir = std::env::temp_dir().join(format!("kiln-mnist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("train-images-idx3-ubyte"),
            idx(0x803, &[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &idx(0x801, &[2], &[5, 9])).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz.finish().unwrap()).unwrap();
        let d = read_dir(&dir, Split::Train).unwrap();
        assert_eq!((d.features, d.rows(), d.y.clone()), (4, 2, vec![5.0, 9.0]));
        assert_eq!(d.x[7], 7.0);
        // The test split, under the dotted names some downloads use.
        std::fs::write(
            dir.join("t10k-images.idx3-ubyte"),
            idx(0x803, &[1, 2, 2], &[9, 8, 7, 6]),
        )
        .unwrap();
        std::fs::write(dir.join("t10k-labels.idx1-ubyte"), idx(0x801, &[1], &[3])).unwrap();
        let t = read_dir(&dir, Split::Test).unwrap();
        assert_eq!((t.features, t.rows(), t.y.clone()), (4, 1, vec![3.0]));
        std::fs::remove_file(dir.join("t10k-labels.idx1-ubyte")).unwrap();
        let e = read_dir(&dir, Split::Test).unwrap_err().to_string();
        assert!(e.contains("no t10k-labels-idx1-ubyte"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_idx_names_the_byte() {
        let good = idx(0x801, &[3], &[1, 2, 3]);
        let e = parse_idx("l", &good[..6], 0x801).unwrap_err().to_string();
        assert_eq!(e, "l: truncated at byte 6: the header needs 8 bytes");
        let e = parse_idx("l", &good[..9], 0x801).unwrap_err().to_string();
        assert_eq!(
            e,
            "l: truncated at byte 9: dimensions [3] need 3 bytes of data from byte 8"
        );
        let mut long = good.clone();
        long.push(4);
        let e = parse_idx("l", &long, 0x801).unwrap_err().to_string();
        assert_eq!(
            e,
            "l: 1 bytes after the data end at byte 11 (dimensions [3]); an idx file ends with its data"
        );
        // Gzipped, the stream is expanded no further than the header declares: a "bomb" of
        // zeros after three bytes of data is refused without being expanded.
        let dir = std::env::temp_dir().join(format!("kiln-idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bomb = good.clone();
        bomb.resize(good.len() + (64 << 20), 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &bomb).unwrap();
        let path = dir.join("bomb.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let e = read_idx(&path, 0x801).unwrap_err().to_string();
        assert!(
            e.contains("goes on past the 3 bytes its header declares (byte 11)"),
            "{e}"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &good).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&path, 0x801).unwrap(), (vec![3], vec![1, 2, 3]));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = parse_idx("i", &good, 0x803).unwrap_err().to_string();
        assert!(
            e.contains("byte 0: magic number 0x801, expected 0x803"),
            "{e}"
        );
    }
}
