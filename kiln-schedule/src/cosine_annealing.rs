//! Cosine annealing (SGDR without restarts).
//!
//! lr(0) = base; for t ≥ 1 PyTorch's recurrence
//!   lr(t) = (1 + cos(πt/T)) / (1 + cos(π(t−1)/T)) · (lr(t−1) − η_min) + η_min,
//! except where the denominator vanishes ((t − 1 − T) mod 2T = 0), where
//!   lr(t) = lr(t−1) + (base − η_min)·(1 − cos(π/T))/2.
//! Like PyTorch it keeps following the cosine past T (rising again, period 2T).
//! Source: `torch.optim.lr_scheduler.CosineAnnealingLR`; Loshchilov & Hutter, "SGDR" (2017).

use crate::{LrSchedule, ScheduleError, non_negative};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealingLr {
    base: f64,
    t_max: u64,
    eta_min: f64,
    /// Updates done so far (PyTorch's `last_epoch`).
    t: u64,
    current: f64,
}

impl CosineAnnealingLr {
    pub fn new(lr: f64, t_max: u64, eta_min: f64) -> Result<Self, ScheduleError> {
        non_negative("lr", lr)?;
        non_negative("eta_min", eta_min)?;
        if t_max == 0 {
            return Err(ScheduleError {
                field: "t_max",
                reason: "must be at least 1".into(),
            });
        }
        Ok(CosineAnnealingLr {
            base: lr,
            t_max,
            eta_min,
            t: 0,
            current: lr,
        })
    }
}

impl LrSchedule for CosineAnnealingLr {
    fn lr(&self) -> f64 {
        self.current
    }

    fn step(&mut self) {
        self.t += 1;
        let (t, t_max) = (self.t as i128, self.t_max as i128);
        let tm = self.t_max as f64;
        self.current = if (t - 1 - t_max).rem_euclid(2 * t_max) == 0 {
            self.current + (self.base - self.eta_min) * (1.0 - (PI / tm).cos()) / 2.0
        } else {
            (1.0 + (PI * self.t as f64 / tm).cos()) / (1.0 + (PI * (self.t - 1) as f64 / tm).cos())
                * (self.current - self.eta_min)
                + self.eta_min
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::rates;

    #[test]
    fn follows_the_closed_form_and_rises_past_t_max() {
        let (base, t_max, eta_min) = (0.1, 10, 0.001);
        let mut s = CosineAnnealingLr::new(base, t_max, eta_min).unwrap();
        for (t, got) in rates(&mut s, 41).into_iter().enumerate() {
            let closed =
                eta_min + (base - eta_min) * (1.0 + (PI * t as f64 / t_max as f64).cos()) / 2.0;
            assert!((got - closed).abs() < 1e-12, "t={t}: {got} vs {closed}");
        }
    }

    #[test]
    fn rejects_zero_t_max() {
        assert_eq!(
            CosineAnnealingLr::new(0.1, 0, 0.0).unwrap_err().field,
            "t_max"
        );
    }
}
