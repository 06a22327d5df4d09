//! Exponential decay: lr(t) = lr(t−1)·γ (PyTorch's recurrence; closed form lr·γ^t).
//! Source: `torch.optim.lr_scheduler.ExponentialLR`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, positive};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's ExponentialLR.
pub struct ExponentialLr {
    /// Factor per update.
    pub gamma: f64,
}

impl ExponentialLr {
    /// Checks gamma > 0.
    pub fn new(gamma: f64) -> Result<Self> {
        positive("gamma", gamma)?;
        Ok(ExponentialLr { gamma })
    }
}

impl Rule for ExponentialLr {
    fn check(&self) -> Result<()> {
        Self::new(self.gamma).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        Ok(if e.initial {
            group.lr
        } else {
            group.lr * self.gamma
        })
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        Some(e.base * self.gamma.powf(e.t as f64))
    }
}
