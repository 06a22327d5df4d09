//! Cosine annealing (SGDR without restarts): η_min + (lr − η_min)·(1 + cos(πt/T))/2.
//!
//! Recurrence (PyTorch), for t ≥ 1:
//!   lr(t) = (1 + cos(πt/T)) / (1 + cos(π(t−1)/T)) · (lr(t−1) − η_min) + η_min,
//! except where the denominator vanishes ((t − 1 − T) mod 2T = 0):
//!   lr(t) = lr(t−1) + (lr − η_min)·(1 − cos(π/T))/2.
//! Like PyTorch it keeps following the cosine past T: the rate rises again, period 2T.
//! Source: `torch.optim.lr_scheduler.CosineAnnealingLR`; Loshchilov & Hutter, "SGDR" (2017).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's CosineAnnealingLR.
pub struct CosineAnnealingLr {
    /// Half period T, in updates.
    pub t_max: u64,
    /// The lowest rate η_min.
    pub eta_min: f64,
}

impl CosineAnnealingLr {
    /// Checks the parameters (t_max ≥ 1, eta_min ≥ 0).
    pub fn new(t_max: u64, eta_min: f64) -> Result<Self> {
        crate::count_param("t_max", t_max)?;
        if t_max == 0 {
            return Err(ScheduleError::new("t_max", "must be at least 1"));
        }
        non_negative("eta_min", eta_min)?;
        Ok(CosineAnnealingLr { t_max, eta_min })
    }
}

impl Rule for CosineAnnealingLr {
    fn check(&self) -> Result<()> {
        Self::new(self.t_max, self.eta_min).map(drop)
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        let (t, n, eta) = (e.t, self.t_max as i64, self.eta_min);
        let tm = self.t_max as f64;
        Ok(if e.initial {
            group.lr
        } else if e.step_count == 1 && t > 0 {
            eta + (e.base - eta) * (1.0 + (t as f64 * PI / tm).cos()) / 2.0
        } else if (t - 1 - n).rem_euclid(2 * n) == 0 {
            group.lr + (e.base - eta) * (1.0 - (PI / tm).cos()) / 2.0
        } else {
            (1.0 + (PI * t as f64 / tm).cos()) / (1.0 + (PI * (t - 1) as f64 / tm).cos())
                * (group.lr - eta)
                + eta
        })
    }

    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        let eta = self.eta_min;
        Some(eta + (e.base - eta) * (1.0 + (PI * e.t as f64 / self.t_max as f64).cos()) / 2.0)
    }
}
