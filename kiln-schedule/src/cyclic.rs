//! Cyclical learning rate: a triangle between base_lr and max_lr.
//!
//!   cycle = ⌊1 + t/(up + down)⌋,  x = 1 + t/(up + down) − cycle,
//!   scale = x/r if x ≤ r else (x − 1)/(r − 1)   with r = up/(up + down),
//!   lr(t) = base_lr + (max_lr − base_lr)·scale·s,
//! where s = 1 (triangular), 1/2^(cycle−1) (triangular2) or γ^t (exp_range, per iteration).
//! `base_lr` replaces the optimizer's rate. With `cycle_momentum` (PyTorch's default) the
//! optimizer's momentum (β1 for the Adam family) moves the other way:
//!   momentum(t) = max_momentum − (max_momentum − base_momentum)·scale·s,
//! and is `max_momentum` from construction on.
//! Source: `torch.optim.lr_scheduler.CyclicLR`; Smith, "Cyclical Learning Rates for Training
//! Neural Networks" (2017).

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, MomentumCycle, Result, ScheduleError, non_negative, positive};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How each cycle's amplitude is scaled.
pub enum CyclicMode {
    /// The same amplitude every cycle.
    Triangular,
    /// The amplitude halves every cycle.
    Triangular2,
    /// The amplitude scales by γ^t, per update.
    ExpRange,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's CyclicLR.
pub struct CyclicLr {
    /// The bottom of the cycle; replaces the optimizer's rate.
    pub base_lr: f64,
    /// The top of the cycle.
    pub max_lr: f64,
    total_size: f64,
    step_ratio: f64,
    /// Amplitude scaling.
    pub mode: CyclicMode,
    /// γ of exp_range.
    pub gamma: f64,
    /// The momentum cycle (`None`: PyTorch's `cycle_momentum=False`). Absent from schedules
    /// saved before Kiln cycled momentum, which resume as they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<MomentumCycle>,
}

/// PyTorch's CyclicLR defaults: base_momentum 0.8, max_momentum 0.9.
pub const DEFAULT_MOMENTUM: MomentumCycle = MomentumCycle {
    base_momentum: 0.8,
    max_momentum: 0.9,
};

impl CyclicLr {
    /// Checks the parameters; `step_size_down` defaults to `step_size_up`. Momentum cycles
    /// as PyTorch's defaults say ([`DEFAULT_MOMENTUM`]) unless [`CyclicLr::cycle_momentum`]
    /// says otherwise.
    pub fn new(
        base_lr: f64,
        max_lr: f64,
        step_size_up: u64,
        step_size_down: Option<u64>,
        mode: CyclicMode,
        gamma: f64,
    ) -> Result<Self> {
        non_negative("base_lr", base_lr)?;
        non_negative("max_lr", max_lr)?;
        positive("gamma", gamma)?;
        if step_size_up == 0 {
            return Err(ScheduleError::new("step_size_up", "must be at least 1"));
        }
        let up = step_size_up as f64;
        let down = step_size_down.map_or(up, |d| d as f64);
        let total_size = up + down;
        Ok(CyclicLr {
            base_lr,
            max_lr,
            total_size,
            step_ratio: up / total_size,
            mode,
            gamma,
            momentum: Some(DEFAULT_MOMENTUM),
        })
    }

    /// The momentum cycle, or `None` for the rate alone (PyTorch's `cycle_momentum`).
    pub fn cycle_momentum(mut self, momentum: Option<MomentumCycle>) -> Self {
        self.momentum = momentum;
        self
    }

    /// (scale, s) of update t: where in the cycle, and the mode's amplitude factor.
    fn position(&self, t: i64) -> (f64, f64) {
        let q = t as f64 / self.total_size;
        let cycle = (1.0 + q).floor();
        let x = 1.0 + q - cycle;
        let scale = if x <= self.step_ratio {
            x / self.step_ratio
        } else {
            (x - 1.0) / (self.step_ratio - 1.0)
        };
        let s = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2.0f64.powf(cycle - 1.0),
            CyclicMode::ExpRange => self.gamma.powf(t as f64),
        };
        (scale, s)
    }
}

impl Rule for CyclicLr {
    fn check(&self) -> Result<()> {
        if !(self.total_size.is_finite() && self.total_size > 0.0) {
            return Err(ScheduleError::new(
                "step_size_up",
                "a restored cyclic schedule has no cycle length",
            ));
        }
        self.momentum.map_or(Ok(()), MomentumCycle::check)
    }

    fn before_init(&mut self, group: &mut Group) -> Option<f64> {
        group.lr = self.base_lr;
        if let Some(m) = self.momentum {
            m.install(group);
        }
        Some(self.base_lr)
    }

    fn get_lr(&self, e: &Epoch, _group: &Group) -> Result<f64> {
        let (scale, s) = self.position(e.t);
        let base_height = (self.max_lr - e.base) * scale;
        Ok(e.base + base_height * s)
    }

    /// From its own bounds (PyTorch's CyclicLR keeps them on itself).
    fn momentum(&self, e: &Epoch, _group: &Group) -> Option<f64> {
        let m = self.momentum?;
        let (scale, s) = self.position(e.t);
        let base_height = (m.max_momentum - m.base_momentum) * scale;
        Some(m.max_momentum - base_height * s)
    }
}
