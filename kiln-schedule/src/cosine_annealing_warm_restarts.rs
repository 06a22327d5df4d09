//! Cosine annealing with warm restarts (SGDR):
//!   lr = η_min + (lr₀ − η_min)·(1 + cos(π·T_cur/T_i))/2,
//! with T_cur counting updates since the last restart, restarting when T_cur reaches T_i, and
//! T_i multiplied by T_mult at each restart (T_0 first).
//! Source: `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`; Loshchilov & Hutter,
//! "SGDR: Stochastic Gradient Descent with Warm Restarts" (2017).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Observation, Result, ScheduleError, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's CosineAnnealingWarmRestarts.
pub struct CosineAnnealingWarmRestarts {
    /// Updates until the first restart.
    pub t_0: u64,
    /// Factor by which each period grows.
    pub t_mult: u64,
    /// The lowest rate η_min.
    pub eta_min: f64,
    t_i: u64,
    t_cur: i64,
    last_epoch: i64,
    base: f64,
}

impl CosineAnnealingWarmRestarts {
    /// Checks the parameters as PyTorch does.
    pub fn new(t_0: u64, t_mult: u64, eta_min: f64) -> Result<Self> {
        crate::count_param("t_0", t_0)?;
        crate::count_param("t_mult", t_mult)?;
        if t_0 == 0 {
            return Err(ScheduleError::new("t_0", "must be at least 1"));
        }
        if t_mult == 0 {
            return Err(ScheduleError::new("t_mult", "must be at least 1"));
        }
        non_negative("eta_min", eta_min)?;
        Ok(CosineAnnealingWarmRestarts {
            t_0,
            t_mult,
            eta_min,
            t_i: t_0,
            t_cur: -1,
            last_epoch: -1,
            base: 0.0,
        })
    }

    fn get_lr(&self) -> f64 {
        let eta = self.eta_min;
        eta + (self.base - eta) * (1.0 + (PI * self.t_cur as f64 / self.t_i as f64).cos()) / 2.0
    }
}

impl LrSchedule for CosineAnnealingWarmRestarts {
    fn check(&self) -> Result<()> {
        Self::new(self.t_0, self.t_mult, self.eta_min)?;
        crate::check_count("last_epoch", self.last_epoch)?;
        crate::check_count("t_cur", self.t_cur)?;
        if self.t_i == 0 {
            return Err(ScheduleError::new("t_0", "the restored period is 0"));
        }
        Ok(())
    }

    fn construct(&mut self, group: &mut Group) -> Result<()> {
        self.base = group.base_lr();
        self.initial_step(group)
    }

    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        self.step(group, &Observation::default())
    }

    fn step(&mut self, group: &mut Group, _observation: &Observation) -> Result<()> {
        if self.last_epoch < 0 {
            // PyTorch's step(epoch=0) path, taken by the initial step.
            self.t_i = self.t_0;
            self.t_cur = 0;
            self.last_epoch = 0;
        } else {
            self.last_epoch += 1;
            self.t_cur += 1;
            if self.t_cur >= self.t_i as i64 {
                self.t_cur %= self.t_i as i64;
                // Saturating: after 64 doublings the period outlasts any run anyway.
                self.t_i = self.t_i.saturating_mul(self.t_mult).min(crate::MAX_COUNT);
            }
        }
        group.lr = self.get_lr();
        Ok(())
    }

    /// `LRScheduler._update_lr(0)`: no closed form, so `get_lr` with the restart state as it
    /// stands (PyTorch's behaviour inside SequentialLR).
    fn restart(&mut self, group: &mut Group) -> Result<()> {
        self.last_epoch = 0;
        group.lr = self.get_lr();
        Ok(())
    }

    fn undo(&mut self) {
        self.last_epoch -= 1;
    }
}
