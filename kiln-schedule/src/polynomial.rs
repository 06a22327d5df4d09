//! Polynomial decay to zero over `total_iters` updates: lr·(1 − min(t, T)/T)^power.
//!
//! Recurrence (PyTorch): for 1 ≤ t ≤ T,
//!   lr(t) = lr(t−1)·((1 − t/T) / (1 − (t−1)/T))^power; afterwards the rate is kept.
//! Source: `torch.optim.lr_scheduler.PolynomialLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's PolynomialLR.
pub struct PolynomialLr {
    /// Updates to reach zero.
    pub total_iters: u64,
    /// Exponent of the decay.
    pub power: f64,
}

impl PolynomialLr {
    /// Checks total_iters ≥ 1 and power ≥ 0.
    pub fn new(total_iters: u64, power: f64) -> Result<Self> {
        crate::count_param("total_iters", total_iters)?;
        if total_iters == 0 {
            return Err(ScheduleError::new("total_iters", "must be at least 1"));
        }
        non_negative("power", power)?;
        Ok(PolynomialLr { total_iters, power })
    }
}

impl Rule for PolynomialLr {
    fn check(&self) -> Result<()> {
        Self::new(self.total_iters, self.power).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        let n = self.total_iters as f64;
        if e.initial || e.t > self.total_iters as i64 {
            return Ok(group.lr);
        }
        let decay = ((1.0 - e.t as f64 / n) / (1.0 - (e.t - 1) as f64 / n)).powf(self.power);
        Ok(group.lr * decay)
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        let t = (self.total_iters as i64).min(e.t) as f64;
        Some(e.base * (1.0 - t / self.total_iters as f64).powf(self.power))
    }
}
