//! Constant factor for a while: lr(t) = lr·factor for t < total_iters, then lr.
//!
//! Recurrence (PyTorch): at t = 0 multiply by factor; at t = total_iters multiply by
//! 1/factor; otherwise keep the rate.
//! Source: `torch.optim.lr_scheduler.ConstantLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's ConstantLR.
pub struct ConstantLr {
    /// The factor during the first `total_iters` updates, in [0, 1].
    pub factor: f64,
    /// Updates at the reduced rate.
    pub total_iters: u64,
}

impl ConstantLr {
    /// Checks `factor` as PyTorch does.
    pub fn new(factor: f64, total_iters: u64) -> Result<Self> {
        crate::count_param("total_iters", total_iters)?;
        if !(0.0..=1.0).contains(&factor) {
            return Err(ScheduleError::new(
                "factor",
                format!("must be in [0, 1], got {factor}"),
            ));
        }

        Ok(ConstantLr {
            factor,
            total_iters,
        })
    }
}

impl Rule for ConstantLr {
    fn check(&self) -> Result<()> {
        Self::new(self.factor, self.total_iters).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        Ok(if e.t == 0 {
            group.lr * self.factor
        } else if e.t != self.total_iters as i64 {
            group.lr
        } else if self.factor == 0.0 {
            // PyTorch takes 0, and fails here too (ZeroDivisionError).
            return Err(ScheduleError::new(
                "factor",
                format!(
                    "is 0, and the rate is divided by it when the constant phase ends (update {})",
                    self.total_iters
                ),
            ));
        } else {
            group.lr * (1.0 / self.factor)
        })
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        let done = if e.t >= self.total_iters as i64 {
            1.0
        } else {
            0.0
        };
        Some(e.base * (self.factor + done * (1.0 - self.factor)))
    }
}
