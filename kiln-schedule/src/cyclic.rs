//! Cyclical learning rate: a triangle between base_lr and max_lr.
//!
//!   cycle = ⌊1 + t/(up + down)⌋,  x = 1 + t/(up + down) − cycle,
//!   scale = x/r if x ≤ r else (x − 1)/(r − 1)   with r = up/(up + down),
//!   lr(t) = base_lr + (max_lr − base_lr)·scale·s,
//! where s = 1 (triangular), 1/2^(cycle−1) (triangular2) or γ^t (exp_range, per iteration).
//! `base_lr` replaces the optimizer's rate. The momentum cycling of PyTorch's class is not
//! copied: Kiln's schedules drive the learning rate only.
//! Source: `torch.optim.lr_scheduler.CyclicLR`; Smith, "Cyclical Learning Rates for Training
//! Neural Networks" (2017).

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError, non_negative, positive};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How each cycle's amplitude is scaled.
pub enum CyclicMode {
    /// The same amplitude every cycle.
    Triangular,
    /// The amplitude halves every cycle.
    Triangular2,
    /// The amplitude scales by γ^t, per update.
    ExpRange,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's CyclicLR (rates only).
pub struct CyclicLr {
    /// The bottom of the cycle; replaces the optimizer's rate.
    pub base_lr: f64,
    /// The top of the cycle.
    pub max_lr: f64,
    total_size: f64,
    step_ratio: f64,
    /// Amplitude scaling.
    pub mode: CyclicMode,
    /// γ of exp_range.
    pub gamma: f64,
}

impl CyclicLr {
    /// Checks the parameters; `step_size_down` defaults to `step_size_up`.
    pub fn new(
        base_lr: f64,
        max_lr: f64,
        step_size_up: u64,
        step_size_down: Option<u64>,
        mode: CyclicMode,
        gamma: f64,
    ) -> Result<Self> {
        non_negative("base_lr", base_lr)?;
        non_negative("max_lr", max_lr)?;
        positive("gamma", gamma)?;
        if step_size_up == 0 {
            return Err(ScheduleError::new("step_size_up", "must be at least 1"));
        }
        let up = step_size_up as f64;
        let down = step_size_down.map_or(up, |d| d as f64);
        let total_size = up + down;
        Ok(CyclicLr {
            base_lr,
            max_lr,
            total_size,
            step_ratio: up / total_size,
            mode,
            gamma,
        })
    }
}

impl Rule for CyclicLr {
    fn check(&self) -> Result<()> {
        if !(self.total_size.is_finite() && self.total_size > 0.0) {
            return Err(ScheduleError::new(
                "step_size_up",
                "a restored cyclic schedule has no cycle length",
            ));
        }
        Ok(())
    }

    fn before_init(&mut self, group: &mut Group) -> Option<f64> {
        group.lr = self.base_lr;
        Some(self.base_lr)
    }

    fn get_lr(&self, e: &Epoch, _group: &Group) -> Result<f64> {
        let q = e.t as f64 / self.total_size;
        let cycle = (1.0 + q).floor();
        let x = 1.0 + q - cycle;
        let scale = if x <= self.step_ratio {
            x / self.step_ratio
        } else {
            (x - 1.0) / (self.step_ratio - 1.0)
        };
        let base_height = (self.max_lr - e.base) * scale;
        let s = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2.0f64.powf(cycle - 1.0),
            CyclicMode::ExpRange => self.gamma.powf(e.t as f64),
        };
        Ok(e.base + base_height * s)
    }
}
