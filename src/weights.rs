//! Model weights as safetensors in PyTorch's `nn.Sequential` layout: `layers.{i}.weight`
//! `[out, in]` and `layers.{i}.bias` `[out]`, i being the position in the model's layers
//! (activations count), so `model.load_state_dict(safetensors.torch.load_file(path))` works on
//! the equivalent PyTorch model and Kiln loads PyTorch's files.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{KilnError, Result};
use crate::model::ParamLayout;

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one whole:
/// a temporary file beside it, fsync, rename over, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, name) = output_target(path)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        KilnError::file(path, format!("writing: {e}"))
    })
}

/// The directory and file name of an output path, refusing what must not be replaced: a
/// directory, a device or other special file, a path without a file name or whose directory
/// does not exist.
fn output_target(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| KilnError::file(path, "not a file name"))?;
    if !dir.is_dir() {
        return Err(KilnError::file(
            path,
            format!("the directory {} does not exist", dir.display()),
        ));
    }
    // Not followed: a link (even to a regular file, or to nothing) would be replaced by a
    // file, not written through.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(KilnError::file(
            path,
            "exists and is not a regular file; Kiln replaces only regular files",
        ));
    }
    Ok((dir, name))
}

/// Removes the temporary files that [`write_atomic`] calls of `path` and that a killed
/// process left behind (`.NAME.tmp-PID` whose process is gone; Linux only, where /proc tells).
pub fn remove_stale_temps(path: &Path) {
    remove_temps_where(path, |pid| {
        pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// Removes every temporary file of `path`'s [`write_atomic`] calls, whoever made it: for a
/// caller that knows nobody else writes there (it holds the directory's lock).
pub fn remove_all_temps(path: &Path) {
    remove_temps_where(path, |_| true);
}

/// Removes the temporary files of `path` whose writer's process id `stale` accepts.
fn remove_temps_where(path: &Path, stale: impl Fn(u32) -> bool) {
    let Ok((dir, name)) = output_target(path) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if stale(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Checks, before a run starts, that [`write_atomic`] can later write `path`: the target is
/// allowed and its directory takes a new file (a probe file is created and removed).
pub fn check_writable(path: &Path) -> Result<()> {
    let (dir, name) = output_target(path)?;
    remove_stale_temps(path);
    let probe = dir.join(format!(
        ".{}.probe-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| KilnError::file(path, format!("cannot write there: {e}")))
}

/// The most bytes read from a file that is not a regular one (a pipe, `<(…)`, a device).
const STREAM_LIMIT: u64 = 256 << 20;

/// The bytes of the file `path`. One that is not a regular file (a pipe, a device such as
/// `/dev/zero`) is read up to [`STREAM_LIMIT`] and refused past it: read whole, it could
/// fill the memory without end.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| KilnError::file(path, e))?;
    if meta.is_file() {
        return std::fs::read(path).map_err(|e| KilnError::file(path, e));
    }
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(STREAM_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| KilnError::file(path, e))?;
    if bytes.len() as u64 > STREAM_LIMIT {
        return Err(KilnError::file(
            path,
            format!(
                "not a regular file, and more than {} MiB came from it (a device that never \
                 ends?); give a regular file",
                STREAM_LIMIT >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// [`read_input`] as UTF-8 text.
pub fn read_input_text(path: &Path) -> Result<String> {
    String::from_utf8(read_input(path)?)
        .map_err(|_| KilnError::file(path, "stream did not contain valid UTF-8"))
}

/// (name, shape, arena offset) of every parameter tensor, with names prefixed by `prefix`.
pub fn tensors(layout: &ParamLayout, prefix: &str) -> Vec<(String, Vec<usize>, usize)> {
    layout
        .dense
        .iter()
        .flat_map(|d| {
            [
                (
                    format!("{prefix}layers.{}.weight", d.layer),
                    vec![d.fan_out, d.fan_in],
                    d.weight,
                ),
                (
                    format!("{prefix}layers.{}.bias", d.layer),
                    vec![d.fan_out],
                    d.bias,
                ),
            ]
        })
        .collect()
}

/// Serialises arenas (each with its name prefix) in the layout, with string metadata.
pub fn serialize(
    layout: &ParamLayout,
    arenas: &[(&str, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    layout.check()?;
    let mut bytes: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (prefix, arena) in arenas {
        crate::ops::check_len(
            "weights",
            &format!("{prefix}arena"),
            arena.len(),
            layout.len,
            "the parameter layout",
        )?;
        for (name, shape, offset) in tensors(layout, prefix) {
            let n: usize = shape.iter().product();
            let data = arena[offset..offset + n]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            bytes.insert(name, (shape, data));
        }
    }
    let views = bytes
        .iter()
        .map(|(name, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KilnError::invalid("weights", e.to_string()))?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| KilnError::invalid("weights", e.to_string()))?;
    Ok(canonical_header(bytes))
}

/// The same file with its JSON header's keys in sorted order. safetensors writes the metadata
/// from a hash map, in an order that changes from run to run; sorted, the same weights and
/// metadata always give the same bytes, so a checksum can tell two runs apart or not.
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    // serde_json's map is sorted (no preserve_order), so a round trip sorts every level.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let mut json = serde_json::to_vec(&value).expect("a parsed header serialises");
    // The format pads the header with spaces to a multiple of 8 bytes.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(&bytes[8 + len..]);
    out
}

/// Saves the parameter arena as `path` (atomically), with optional string metadata.
///
/// ```
/// use kiln::{Layer, Loss, Sequential, weights};
/// let model = Sequential::new(3, vec![Layer::Dense { out: 2 }], Loss::Mse)?;
/// let layout = model.param_layout(kiln::train::PARAM_ALIGN);
/// let params = model.init_params(&layout, 0)?;
/// let path = std::env::temp_dir().join("kiln-doc-weights.safetensors");
/// weights::save(&path, &layout, &params, None)?; // layers.0.weight [2, 3], layers.0.bias [2]
/// assert_eq!(weights::load(&path, &layout)?, params);
/// # Ok::<(), kiln::KilnError>(())
/// ```
pub fn save(
    path: &Path,
    layout: &ParamLayout,
    params: &[f32],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    // Weights that are not finite are no model: refuse rather than save them.
    crate::ops::check_finite(&format!("{}: the weights to save", path.display()), params)?;
    write_atomic(path, &serialize(layout, &[("", params)], metadata)?)
}

/// Loads `path` into a parameter arena of `layout`. Every missing, unexpected, wrongly shaped
/// or non-f32 tensor is listed in one error.
pub fn load(path: &Path, layout: &ParamLayout) -> Result<Vec<f32>> {
    layout.check()?;
    let bytes = read_input(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| KilnError::file(path, format!("not a valid safetensors file: {e}")))?;
    // A checkpoint (`--init` from one) keeps other arenas beside the weights.
    let beside = SafeTensors::read_metadata(&bytes).ok().and_then(|(_, m)| {
        let json = m
            .metadata()
            .as_ref()?
            .get(crate::run::checkpoint::META_KEY)?
            .clone();
        crate::run::checkpoint::arenas_beside_weights(&json)
    });
    let beside: Vec<&str> = beside.iter().flatten().map(String::as_str).collect();
    let mut arena = vec![0.0; layout.len];
    let prefix = if beside.is_empty() {
        Prefix::None
    } else {
        Prefix::WeightsOfCheckpoint(&beside)
    };
    read_into(&st, layout, prefix, &mut arena).map_err(|problems| {
        KilnError::file(
            path,
            format!("does not fit the model:\n  {}", problems.join("\n  ")),
        )
    })?;
    crate::ops::check_finite(&format!("{}: weights", path.display()), &arena)?;
    Ok(arena)
}

/// Which tensors of a file [`read_into`] reads, and which others it lets be.
#[derive(Clone, Copy, Debug)]
pub enum Prefix<'a> {
    /// `layers.…`, from a file of weights alone: any other tensor is unexpected.
    None,
    /// `layers.…`, from a checkpoint: the other arenas it keeps beside them, these tensor
    /// prefixes (`exp_avg.`, `best.`), are not unexpected; any other name is.
    WeightsOfCheckpoint(&'a [&'a str]),
    /// `{prefix}layers.…` (one of a checkpoint's other arenas); tensors with other prefixes
    /// are let be.
    Arena(&'a str),
}

/// Copies the tensors `prefix` names into `arena`; lists every problem.
pub fn read_into(
    st: &SafeTensors<'_>,
    layout: &ParamLayout,
    prefix: Prefix<'_>,
    arena: &mut [f32],
) -> Result<(), Vec<String>> {
    let prefix_text = match prefix {
        Prefix::None | Prefix::WeightsOfCheckpoint(_) => "",
        Prefix::Arena(p) => p,
    };
    if arena.len() != layout.len {
        return Err(vec![format!(
            "the arena to read into has {} elements, the layout {}",
            arena.len(),
            layout.len
        )]);
    }
    let expected = tensors(layout, prefix_text);
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for (name, shape, offset) in &expected {
        match st.tensor(name) {
            Err(_) => {
                problems.push(format!("missing `{name}` {shape:?}"));
                missing.push(name.as_str());
            }
            Ok(t) if t.dtype() != Dtype::F32 => {
                problems.push(format!("`{name}` is {:?}, expected F32", t.dtype()))
            }
            Ok(t) if t.shape() != shape.as_slice() => problems.push(format!(
                "`{name}` has shape {:?}, expected {shape:?}",
                t.shape()
            )),
            Ok(t) => {
                for (dst, b) in arena[*offset..].iter_mut().zip(t.data().chunks_exact(4)) {
                    *dst = f32::from_le_bytes(b.try_into().unwrap());
                }
            }
        }
    }
    let ours: Vec<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| match prefix {
            Prefix::None => true,
            Prefix::WeightsOfCheckpoint(beside) => !beside.iter().any(|p| n.starts_with(p)),
            Prefix::Arena(p) => n.starts_with(p),
        })
        .filter(|n| !ours.contains(n))
        .collect();
    extra.sort();
    problems.extend(extra.iter().map(|n| format!("unexpected `{n}`")));
    // PyTorch state dicts of wrapped models name `module.layers.0.weight` (DataParallel).
    if let Some((want, have)) = missing.iter().find_map(|want| {
        extra
            .iter()
            .find(|n| n.ends_with(&format!(".{want}")))
            .map(|n| (want, n))
    }) {
        let head = &have[..have.len() - want.len()];
        problems.push(format!(
            "the file's names carry a prefix `{head}` (`{have}` for `{want}`): save the model's \
             own state dict, or strip the prefix"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Layer, Sequential};
    use crate::ops::{Activation, Loss};

    fn model(widths: &[usize]) -> Sequential {
        let mut layers = Vec::new();
        for &w in widths {
            layers.push(Layer::Dense { out: w });
            layers.push(Layer::Activation(Activation::Tanh));
        }
        layers.pop();
        Sequential::new(3, layers, Loss::Mse).unwrap()
    }

    /// A write that fails before the rename leaves the previous file whole: here the
    /// temporary file cannot be created because a directory sits at its name.
    #[test]
    fn a_failed_write_leaves_the_previous_file_whole() {
        let dir = std::env::temp_dir().join(format!("kiln-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        write_atomic(&path, b"old, complete").unwrap();
        let blocker = dir.join(format!(
            ".checkpoint.safetensors.tmp-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&blocker).unwrap();
        let e = write_atomic(&path, b"new").unwrap_err().to_string();
        assert!(e.contains("checkpoint.safetensors: writing"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old, complete");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_and_load_round_trip_in_sequential_layout() {
        let m = model(&[4, 2]);
        let layout = m.param_layout(64);
        let params = m.init_params(&layout, 1).unwrap();
        let path = std::env::temp_dir().join(format!("kiln-w-{}.safetensors", std::process::id()));
        save(&path, &layout, &params, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(
            names,
            [
                "layers.0.bias",
                "layers.0.weight",
                "layers.2.bias",
                "layers.2.weight"
            ]
        );
        assert_eq!(st.tensor("layers.2.weight").unwrap().shape(), [2, 4]);
        assert_eq!(load(&path, &layout).unwrap(), params);
        std::fs::remove_file(&path).unwrap();
    }

    /// The same weights and metadata give the same bytes, whatever order the metadata map
    /// iterates in, and the file still reads back.
    #[test]
    fn the_same_content_gives_the_same_bytes() {
        let m = model(&[4, 2]);
        let layout = m.param_layout(64);
        let params = m.init_params(&layout, 1).unwrap();
        let meta: HashMap<String, String> = (0..20)
            .map(|i| (format!("kiln.key{i}"), format!("[{i}]")))
            .collect();
        let first = serialize(&layout, &[("", &params)], Some(meta.clone())).unwrap();
        for _ in 0..5 {
            // A fresh map: another hash seed, another iteration order.
            let again: HashMap<String, String> = meta.clone().into_iter().collect();
            assert_eq!(
                serialize(&layout, &[("", &params)], Some(again)).unwrap(),
                first
            );
        }
        let st = SafeTensors::deserialize(&first).unwrap();
        let mut arena = vec![0.0; layout.len];
        read_into(&st, &layout, Prefix::None, &mut arena).unwrap();
        assert_eq!(arena, params);
        let (_, header) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["kiln.key7"], "[7]");
    }

    #[test]
    fn a_file_for_another_model_lists_every_mismatch() {
        let path = std::env::temp_dir().join(format!("kiln-w2-{}.safetensors", std::process::id()));
        let other = model(&[5, 2, 1]);
        let l = other.param_layout(64);
        save(&path, &l, &other.init_params(&l, 0).unwrap(), None).unwrap();
        let e = load(&path, &model(&[4, 2]).param_layout(64))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`layers.0.weight` has shape [5, 3], expected [4, 3]"),
            "{e}"
        );
        assert!(
            e.contains("`layers.2.weight` has shape [2, 5], expected [2, 4]"),
            "{e}"
        );
        assert!(
            e.contains("unexpected `layers.4.bias`") && e.contains("unexpected `layers.4.weight`"),
            "{e}"
        );
        // An arena that is not the layout's size is an error, not a slice out of range.
        let e = save(&path, &l, &[], None).unwrap_err().to_string();
        assert!(e.contains("`arena` has 0 elements"), "{e}");
        std::fs::write(&path, b"garbage").unwrap();
        let e = load(&path, &model(&[4, 2]).param_layout(64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid safetensors file"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    /// A file of weights alone hides nothing: names that look like a checkpoint's other
    /// arenas (or a wrapped model's, `module.layers.…`) are unexpected, and a prefix on every
    /// name is pointed out.
    #[test]
    fn wrapped_and_foreign_names_are_reported() {
        let path = std::env::temp_dir().join(format!("kiln-w3-{}.safetensors", std::process::id()));
        let m = model(&[2]);
        let layout = m.param_layout(64);
        let params = m.init_params(&layout, 0).unwrap();
        let write = |names: &[(&str, usize)]| {
            let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = names
                .iter()
                .map(|&(name, len)| {
                    let shape = if name.ends_with("weight") {
                        vec![2, 3]
                    } else {
                        vec![len]
                    };
                    let data: &[u8] = bytemuck::cast_slice(&params[..len]);
                    (
                        name.to_string(),
                        safetensors::tensor::TensorView::new(Dtype::F32, shape, data).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(tensors, None, &path).unwrap();
        };
        write(&[("module.layers.0.weight", 6), ("module.layers.0.bias", 2)]);
        let e = load(&path, &layout).unwrap_err().to_string();
        assert!(
            e.contains("missing `layers.0.weight`")
                && e.contains("unexpected `module.layers.0.weight`")
                && e.contains("carry a prefix `module.`"),
            "{e}"
        );
        write(&[
            ("layers.0.weight", 6),
            ("layers.0.bias", 2),
            ("exp_avg.layers.0.bias", 2),
        ]);
        let e = load(&path, &layout).unwrap_err().to_string();
        assert!(
            e.contains("unexpected `exp_avg.layers.0.bias`") && !e.contains("prefix"),
            "{e}"
        );
        // In a checkpoint, only the arenas its state names lie beside the weights.
        write(&[
            ("layers.0.weight", 6),
            ("layers.0.bias", 2),
            ("exp_avg.layers.0.bias", 2),
            ("foo.layers.0.bias", 2),
        ]);
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut arena = vec![0.0; layout.len];
        let problems = read_into(
            &st,
            &layout,
            Prefix::WeightsOfCheckpoint(&["exp_avg.", "best."]),
            &mut arena,
        )
        .unwrap_err();
        assert_eq!(problems, ["unexpected `foo.layers.0.bias`"]);
        std::fs::remove_file(&path).unwrap();
    }
}
