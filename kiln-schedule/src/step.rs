//! Step decay: multiply the rate by `gamma` every `step_size` updates.
//!
//! lr(0) = lr; lr(t) = lr(t−1)·γ if t mod step_size = 0, else lr(t−1).
//! Source: `torch.optim.lr_scheduler.StepLR` (its recursive `get_lr`; repeated multiplication,
//! not γ^⌊t/step_size⌋, so the rounding is PyTorch's).

use crate::{LrSchedule, ScheduleError, non_negative};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLr {
    step_size: u64,
    gamma: f64,
    /// Updates done so far (PyTorch's `last_epoch`).
    t: u64,
    current: f64,
}

impl StepLr {
    pub fn new(lr: f64, step_size: u64, gamma: f64) -> Result<Self, ScheduleError> {
        non_negative("lr", lr)?;
        if step_size == 0 {
            return Err(ScheduleError {
                field: "step_size",
                reason: "must be at least 1".into(),
            });
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(ScheduleError {
                field: "gamma",
                reason: format!("must be finite and > 0, got {gamma}"),
            });
        }
        Ok(StepLr {
            step_size,
            gamma,
            t: 0,
            current: lr,
        })
    }
}

impl LrSchedule for StepLr {
    fn lr(&self) -> f64 {
        self.current
    }
    fn step(&mut self) {
        self.t += 1;
        if self.t.is_multiple_of(self.step_size) {
            self.current *= self.gamma;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_rates, rates};

    #[test]
    fn matches_pytorch_step_lr() {
        // torch.optim.lr_scheduler.StepLR(SGD(lr=0.1), step_size=3, gamma=0.1): PyTorch's
        // rule multiplies at t = 3, 6, … in f64.
        let mut s = StepLr::new(0.1, 3, 0.1).unwrap();
        let want = [
            0.1,
            0.1,
            0.1,
            0.1 * 0.1,
            0.1 * 0.1,
            0.1 * 0.1,
            0.1 * 0.1 * 0.1,
        ];
        assert_rates(&rates(&mut s, 7), &want);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(StepLr::new(0.1, 0, 0.1).unwrap_err().field, "step_size");
        assert_eq!(StepLr::new(0.1, 2, 0.0).unwrap_err().field, "gamma");
        assert_eq!(StepLr::new(f64::NAN, 2, 0.5).unwrap_err().field, "lr");
    }
}
