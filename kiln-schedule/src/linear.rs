//! Linear ramp of the factor: lr(t) = lr·(s + (e − s)·min(t, T)/T).
//!
//! Recurrence (PyTorch): lr(0) = lr·s; for 1 ≤ t ≤ T
//!   lr(t) = lr(t−1)·(1 + (e − s) / (T·s + (t − 1)·(e − s)));
//! afterwards the rate is kept.
//! Source: `torch.optim.lr_scheduler.LinearLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's LinearLR.
pub struct LinearLr {
    /// Factor at update 0, in (0, 1].
    pub start_factor: f64,
    /// Factor from `total_iters` on, in [0, 1].
    pub end_factor: f64,
    /// Updates over which the factor moves.
    pub total_iters: u64,
}

impl LinearLr {
    /// Checks the factors and length as PyTorch does.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: u64) -> Result<Self> {
        crate::count_param("total_iters", total_iters)?;
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(ScheduleError::new(
                "start_factor",
                format!("must be in (0, 1], got {start_factor}"),
            ));
        }
        if !(0.0..=1.0).contains(&end_factor) {
            return Err(ScheduleError::new(
                "end_factor",
                format!("must be in [0, 1], got {end_factor}"),
            ));
        }
        if total_iters == 0 {
            return Err(ScheduleError::new("total_iters", "must be at least 1"));
        }
        Ok(LinearLr {
            start_factor,
            end_factor,
            total_iters,
        })
    }
}

impl Rule for LinearLr {
    fn check(&self) -> Result<()> {
        Self::new(self.start_factor, self.end_factor, self.total_iters).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        if e.t == 0 {
            return Ok(group.lr * self.start_factor);
        }
        if e.initial || e.t > self.total_iters as i64 {
            return Ok(group.lr);
        }
        let (s, f) = (self.start_factor, self.end_factor);
        Ok(group.lr * (1.0 + (f - s) / (self.total_iters as f64 * s + (e.t - 1) as f64 * (f - s))))
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        let (s, f) = (self.start_factor, self.end_factor);
        let t = (self.total_iters as i64).min(e.t) as f64;
        Some(e.base * (s + (f - s) * t / self.total_iters as f64))
    }
}
