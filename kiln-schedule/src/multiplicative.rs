//! Multiplicative decay: lr(t) = lr(t−1)·factor for t ≥ 1.
//! Source: `torch.optim.lr_scheduler.MultiplicativeLR` with `lr_lambda = lambda t: factor`.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's MultiplicativeLR with a constant factor.
pub struct MultiplicativeLr {
    /// Factor per update.
    pub factor: f64,
}

impl MultiplicativeLr {
    /// Checks factor ≥ 0.
    pub fn new(factor: f64) -> Result<Self> {
        non_negative("factor", factor)?;
        Ok(MultiplicativeLr { factor })
    }
}

impl Rule for MultiplicativeLr {
    fn check(&self) -> Result<()> {
        Self::new(self.factor).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        Ok(if e.initial {
            group.lr
        } else {
            group.lr * self.factor
        })
    }
}
