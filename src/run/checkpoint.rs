//! Checkpoints: one safetensors file, `DIR/checkpoint.safetensors`, holding the weights
//! (`layers.{i}.…`, loadable in PyTorch like a weights file), the momentum buffers
//! (`momentum.layers.{i}.…`) and, as JSON metadata, the step, the epoch, the schedule's state and
//! any observations a one-update-late schedule has yet to see. One file, written atomically:
//! a crash leaves the previous checkpoint whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::model::ParamLayout;
use crate::train::TrainerState;
use crate::weights;

/// The checkpoint's file name inside its directory.
pub const FILE: &str = "checkpoint.safetensors";
const META_KEY: &str = "kiln.checkpoint";

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    epoch: u64,
    has_momentum: bool,
    trainer: TrainerState,
}

/// The checkpoint file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes a checkpoint into `dir` (created if missing), atomically.
pub fn save(dir: &Path, layout: &ParamLayout, state: &TrainerState, epoch: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| KilnError::file(dir, e))?;
    let meta = Meta {
        format: 1,
        epoch,
        has_momentum: state.momentum.is_some(),
        trainer: state.clone(),
    };
    let json = serde_json::to_string(&meta)
        .map_err(|e| KilnError::invalid("checkpoint", e.to_string()))?;
    let mut arenas: Vec<(&str, &[f32])> = vec![("", &state.params)];
    if let Some(m) = &state.momentum {
        arenas.push(("momentum.", m));
    }
    let bytes = weights::serialize(
        layout,
        &arenas,
        Some(HashMap::from([(META_KEY.to_string(), json)])),
    )?;
    weights::write_atomic(&path(dir), &bytes)
}

/// The trainer state and epoch saved in `dir`.
pub fn load(dir: &Path, layout: &ParamLayout) -> Result<(TrainerState, u64)> {
    let file = path(dir);
    let bytes = std::fs::read(&file).map_err(|e| KilnError::file(&file, e))?;
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
    let mut state = meta.trainer;
    let mismatch = |p: Vec<String>| {
        KilnError::file(
            &file,
            format!("does not fit the model:\n  {}", p.join("\n  ")),
        )
    };
    state.params = vec![0.0; layout.len];
    weights::read_into(&st, layout, "", &mut state.params).map_err(mismatch)?;
    state.momentum = if meta.has_momentum {
        let mut m = vec![0.0; layout.len];
        weights::read_into(&st, layout, "momentum.", &mut m).map_err(mismatch)?;
        Some(m)
    } else {
        None
    };
    Ok((state, meta.epoch))
}
