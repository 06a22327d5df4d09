//! Checkpoints: one safetensors file, `DIR/checkpoint.safetensors`, holding the weights
//! (`layers.{i}.…`, loadable in PyTorch like a weights file), each optimizer state tensor under
//! PyTorch's state name (`exp_avg.layers.{i}.weight`, `momentum_buffer.layers.{i}.bias`, …)
//! and, as JSON metadata, the step, the epoch, the optimizer's name and scalar state (`step`,
//! NAdam's `mu_product`), the schedule's state and any observations a one-update-late schedule
//! has yet to see. One file, written atomically: a crash leaves the previous checkpoint whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::model::ParamLayout;
use crate::run::RunState;
use crate::train::{OptimizerState, TrainerState};
use crate::weights;

/// The checkpoint's file name inside its directory.
pub const FILE: &str = "checkpoint.safetensors";
/// The metadata key that holds a checkpoint's JSON (and marks a file as one).
pub const META_KEY: &str = "kiln.checkpoint";
/// 1: SGD only, momentum as `momentum.…`; 2: optimizer state by name.
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    epoch: u64,
    /// Format 1 only: whether `momentum.…` tensors are present.
    #[serde(default, skip_serializing)]
    has_momentum: bool,
    /// The optimizer state tensors saved, by name.
    #[serde(default)]
    state_blocks: Vec<String>,
    trainer: TrainerState,
    /// Per-epoch metrics, early stopping and the best value so far.
    #[serde(default)]
    run: RunState,
}

/// Prefix of the parameters early stopping's `restore_best` keeps.
const BEST: &str = "best.";

/// A checkpoint directory held by one run (see [`lock`]); released when dropped or when the
/// process ends, however it ends.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    /// The directory, canonical, so that another spelling of it is recognised.
    dir: PathBuf,
}

impl DirLock {
    /// Whether this lock is the one for `dir`.
    pub fn holds(&self, dir: &Path) -> bool {
        std::fs::canonicalize(dir).is_ok_and(|d| d == self.dir)
    }
}

/// Takes `dir` (created if missing) for this run: a second run writing or resuming the same
/// directory is refused instead of interleaving its writes. Temporary files a killed run left
/// there are removed: nobody else is writing.
pub fn lock(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir).map_err(|e| KilnError::file(dir, e))?;
    let lock_path = dir.join(".kiln.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| KilnError::file(&lock_path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(KilnError::file(
                dir,
                "another kiln run is writing checkpoints here; wait for it, or use another directory",
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(KilnError::file(&lock_path, e)),
    }
    crate::weights::remove_all_temps(&path(dir));
    let dir = std::fs::canonicalize(dir).map_err(|e| KilnError::file(dir, e))?;
    Ok(DirLock { _file: file, dir })
}

/// The checkpoint file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes a checkpoint into `dir` (created if missing), atomically.
pub fn save(
    dir: &Path,
    layout: &ParamLayout,
    state: &TrainerState,
    epoch: u64,
    run: &RunState,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| KilnError::file(dir, e))?;
    let blocks = &state.optimizer.blocks;
    let meta = Meta {
        format: FORMAT,
        epoch,
        has_momentum: false,
        state_blocks: blocks.iter().map(|(n, _)| n.clone()).collect(),
        trainer: state.clone(),
        run: run.clone(),
    };
    let json = serde_json::to_string(&meta)
        .map_err(|e| KilnError::invalid("checkpoint", e.to_string()))?;
    let prefixes: Vec<String> = blocks.iter().map(|(n, _)| format!("{n}.")).collect();
    let mut arenas: Vec<(&str, &[f32])> = vec![("", &state.params)];
    arenas.extend(
        prefixes
            .iter()
            .zip(blocks)
            .map(|(p, (_, v))| (p.as_str(), &v[..])),
    );
    if let Some(best) = &run.best_params {
        arenas.push((BEST, best));
    }
    let bytes = weights::serialize(
        layout,
        &arenas,
        Some(HashMap::from([(META_KEY.to_string(), json)])),
    )?;
    weights::write_atomic(&path(dir), &bytes)
}

/// The optimizer's state blocks a checkpoint keeps beside its weights: (name, tensor prefix).
/// Checked before any arena is allocated for them.
fn state_arenas(meta: &Meta) -> std::result::Result<Vec<(String, String)>, String> {
    if meta.format == 1 {
        return Ok(if meta.has_momentum {
            vec![("momentum_buffer".to_string(), "momentum.".to_string())]
        } else {
            Vec::new()
        });
    }
    let names = &meta.state_blocks;
    if names.len() > crate::optim::MAX_STATE
        || names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
    {
        return Err(format!(
            "state_blocks {names:?}: at most {} distinct names",
            crate::optim::MAX_STATE
        ));
    }
    Ok(names.iter().map(|n| (n.clone(), format!("{n}."))).collect())
}

/// The tensor prefixes of the arenas a checkpoint keeps beside its weights, read from its
/// state `json` (the [`META_KEY`] metadata): `None` if that is no checkpoint state.
pub(crate) fn arenas_beside_weights(json: &str) -> Option<Vec<String>> {
    let meta: Meta = serde_json::from_str(json).ok()?;
    let mut prefixes: Vec<String> = state_arenas(&meta)
        .ok()?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    prefixes.push(BEST.to_string());
    Some(prefixes)
}

/// The trainer state and epoch saved in `dir`.
pub fn load(dir: &Path, layout: &ParamLayout) -> Result<(TrainerState, u64, RunState)> {
    let file = path(dir);
    let bytes = crate::weights::read_input(&file)?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| KilnError::file(&file, format!("not a valid checkpoint: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| KilnError::file(&file, format!("not a valid checkpoint: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            KilnError::file(&file, "no Kiln checkpoint state (is this a weights file?)")
        })?;
    let meta: Meta = serde_json::from_str(json)
        .map_err(|e| KilnError::file(&file, format!("checkpoint state: {e}")))?;
    if meta.format == 0 {
        return Err(KilnError::file(
            &file,
            "checkpoint format 0 does not exist (a damaged checkpoint?)",
        ));
    }
    if meta.format > FORMAT {
        return Err(KilnError::file(
            &file,
            format!(
                "checkpoint format {} is newer than this Kiln reads ({FORMAT})",
                meta.format
            ),
        ));
    }
    let names = state_arenas(&meta).map_err(|why| KilnError::file(&file, why))?;
    let mut state = meta.trainer;
    let mismatch = |p: Vec<String>| {
        KilnError::file(
            &file,
            format!("does not fit the model:\n  {}", p.join("\n  ")),
        )
    };
    if meta.format == 1 {
        // Kiln's first checkpoints: SGD, with `momentum.…` when momentum had started.
        state.optimizer = OptimizerState {
            name: "sgd".into(),
            scalars: [("step".to_string(), state.steps as f64)].into(),
            blocks: Vec::new(),
        };
    }
    let beside: Vec<&str> = names
        .iter()
        .map(|(_, p)| p.as_str())
        .chain([BEST])
        .collect();
    state.params = vec![0.0; layout.len];
    weights::read_into(
        &st,
        layout,
        weights::Prefix::WeightsOfCheckpoint(&beside),
        &mut state.params,
    )
    .map_err(mismatch)?;
    let finite = |what: &str, values: &[f32]| {
        crate::ops::check_finite(&format!("{}: {what}", file.display()), values)
    };
    finite("weights", &state.params)?;
    for (name, prefix) in names {
        let mut block = vec![0.0; layout.len];
        weights::read_into(&st, layout, weights::Prefix::Arena(&prefix), &mut block)
            .map_err(mismatch)?;
        finite(&format!("optimizer state `{name}`"), &block)?;
        state.optimizer.blocks.push((name, block));
    }
    let mut run = meta.run;
    if st.names().iter().any(|n| n.starts_with(BEST)) {
        let mut best = vec![0.0; layout.len];
        weights::read_into(&st, layout, weights::Prefix::Arena(BEST), &mut best)
            .map_err(mismatch)?;
        finite("best weights", &best)?;
        run.best_params = Some(best);
    }
    Ok((state, meta.epoch, run))
}
