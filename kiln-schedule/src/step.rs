//! Step decay: multiply the rate by γ every `step_size` updates.
//!
//! Recurrence (PyTorch): lr(t) = lr(t−1)·γ if t > 0 and t mod step_size = 0, else lr(t−1)
//! (repeated multiplication, not γ^⌊t/step_size⌋, so the rounding is PyTorch's).
//! Source: `torch.optim.lr_scheduler.StepLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError, positive};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's StepLR.
pub struct StepLr {
    /// Updates between decays.
    pub step_size: u64,
    /// Factor per decay.
    pub gamma: f64,
}

impl StepLr {
    /// Checks step_size ≥ 1 and gamma > 0.
    pub fn new(step_size: u64, gamma: f64) -> Result<Self> {
        crate::count_param("step_size", step_size)?;
        if step_size == 0 {
            return Err(ScheduleError::new("step_size", "must be at least 1"));
        }
        positive("gamma", gamma)?;
        Ok(StepLr { step_size, gamma })
    }
}

impl Rule for StepLr {
    fn check(&self) -> Result<()> {
        Self::new(self.step_size, self.gamma).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        Ok(if e.t == 0 || e.t % self.step_size as i64 != 0 {
            group.lr
        } else {
            group.lr * self.gamma
        })
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        Some(
            e.base
                * self
                    .gamma
                    .powf(e.t.div_euclid(self.step_size as i64) as f64),
        )
    }
}
