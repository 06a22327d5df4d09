//! Reduce on plateau: multiply the rate by `factor` when the observed metric has not improved
//! for more than `patience` updates.
//!
//! After each update, with metric m: improved if m < best·(1 − threshold) (mode min, rel), or
//! m < best − threshold (abs), or the mirror images for mode max. Otherwise the count of bad
//! updates grows; during cooldown it is held at 0. When it exceeds `patience`:
//! new = max(lr·factor, min_lr), applied only if lr − new > eps; cooldown restarts.
//! Source: `torch.optim.lr_scheduler.ReduceLROnPlateau` (same order of checks).

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Needs, Observation, Result, ScheduleError, non_negative};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// Whether the metric should fall or rise.
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How `threshold` is applied.
pub enum ThresholdMode {
    /// Relative to the best value.
    Rel,
    /// Absolute.
    Abs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's ReduceLROnPlateau.
pub struct ReduceLrOnPlateau {
    /// Whether lower or higher is better.
    pub mode: PlateauMode,
    /// Factor of a reduction, in [0, 1).
    pub factor: f64,
    /// Updates without improvement tolerated.
    pub patience: u64,
    /// Improvement that counts.
    pub threshold: f64,
    /// Relative or absolute threshold.
    pub threshold_mode: ThresholdMode,
    /// Updates after a reduction during which bad updates are not counted.
    pub cooldown: u64,
    /// Lowest rate.
    pub min_lr: f64,
    /// Reductions smaller than this are not applied.
    pub eps: f64,
    #[serde(with = "crate::float")]
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
}

impl ReduceLrOnPlateau {
    #[allow(clippy::too_many_arguments)]
    /// Checks the parameters as PyTorch does.
    pub fn new(
        mode: PlateauMode,
        factor: f64,
        patience: u64,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: u64,
        min_lr: f64,
        eps: f64,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&factor) {
            return Err(ScheduleError::new(
                "factor",
                format!("must be in [0, 1), got {factor}"),
            ));
        }
        non_negative("threshold", threshold)?;
        non_negative("min_lr", min_lr)?;
        non_negative("eps", eps)?;
        Ok(ReduceLrOnPlateau {
            mode,
            factor,
            patience,
            threshold,
            threshold_mode,
            cooldown,
            min_lr,
            eps,
            best: Self::worst(mode),
            num_bad_epochs: 0,
            cooldown_counter: 0,
        })
    }

    fn worst(mode: PlateauMode) -> f64 {
        match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    fn is_better(&self, a: f64, best: f64) -> bool {
        match (self.mode, self.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - self.threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - self.threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (self.threshold + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + self.threshold,
        }
    }
}

impl LrSchedule for ReduceLrOnPlateau {
    fn check(&self) -> Result<()> {
        for (field, count) in [
            ("num_bad_epochs", self.num_bad_epochs),
            ("cooldown_counter", self.cooldown_counter),
        ] {
            crate::check_count(field, count.min(i64::MAX as u64) as i64)?;
        }
        Self::new(
            self.mode,
            self.factor,
            self.patience,
            self.threshold,
            self.threshold_mode,
            self.cooldown,
            self.min_lr,
            self.eps,
        )
        .map(drop)
    }

    /// PyTorch's constructor neither steps nor sets `initial_lr`.
    fn construct(&mut self, _group: &mut Group) -> Result<()> {
        Ok(())
    }

    fn initial_step(&mut self, _group: &mut Group) -> Result<()> {
        Ok(())
    }

    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        let current = observation.loss.ok_or_else(|| {
            ScheduleError::new(
                "kind",
                "reduce_on_plateau needs a metric after every update",
            )
        })?;
        if self.is_better(current, self.best) {
            self.best = current;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            let old = group.lr;
            let new = (old * self.factor).max(self.min_lr);
            if old - new > self.eps {
                group.lr = new;
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
        Ok(())
    }

    fn needs(&self) -> Needs {
        Needs {
            loss: true,
            grad_norm: false,
        }
    }
}
