//! Multi-step decay: multiply the rate by γ at each milestone.
//!
//! Recurrence (PyTorch): at t equal to a milestone listed c times, lr(t) = lr(t−1)·γ^c; a
//! milestone at 0 applies at once (in the initial step).
//! Source: `torch.optim.lr_scheduler.MultiStepLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, positive};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's MultiStepLR.
pub struct MultiStepLr {
    /// Sorted, repeats kept (PyTorch's `Counter`).
    pub milestones: Vec<u64>,
    /// Factor per milestone.
    pub gamma: f64,
}

impl MultiStepLr {
    /// Sorts the milestones (repeats multiply again, as in PyTorch).
    pub fn new(mut milestones: Vec<u64>, gamma: f64) -> Result<Self> {
        for (i, &m) in milestones.iter().enumerate() {
            crate::count_param(&format!("milestones[{i}]"), m)?;
        }
        positive("gamma", gamma)?;
        milestones.sort_unstable();
        Ok(MultiStepLr { milestones, gamma })
    }
}

impl Rule for MultiStepLr {
    fn check(&self) -> Result<()> {
        Self::new(self.milestones.clone(), self.gamma).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        let count = self.milestones.iter().filter(|&&m| m as i64 == e.t).count();
        Ok(if count == 0 {
            group.lr
        } else {
            group.lr * self.gamma.powf(count as f64)
        })
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        // bisect_right(sorted milestones, t)
        let passed = self.milestones.iter().filter(|&&m| m as i64 <= e.t).count();
        Some(e.base * self.gamma.powf(passed as f64))
    }
}
