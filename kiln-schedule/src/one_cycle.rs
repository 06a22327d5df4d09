//! One-cycle policy: warm up from max_lr/div_factor to max_lr, then anneal to
//! max_lr/(div_factor·final_div_factor) (with `three_phase`, first back down to the start).
//!
//! Phase ends (PyTorch's exact boundaries): pct_start·N − 1, then N − 1 (two phases), or
//! pct_start·N − 1, 2·pct_start·N − 2, N − 1 (three phases). Within a phase,
//! pct = (t − start)/(end − start) and the rate is
//!   cos: end + (start − end)/2·(1 + cos(π·pct)),   linear: (end − start)·pct + start.
//! The optimizer's own rate is ignored. Asking for update t > total_steps is an error, as in
//! PyTorch; t = total_steps is allowed. With `cycle_momentum` (PyTorch's default) the
//! optimizer's momentum (β1 for the Adam family) is annealed the same way the other way round:
//! max_momentum → base_momentum while the rate rises, back to max_momentum while it falls
//! (three phases: and stays there), and is `max_momentum` from construction on.
//! Source: `torch.optim.lr_scheduler.OneCycleLR`; Smith & Topin, "Super-Convergence" (2018).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, MomentumCycle, Result, ScheduleError, non_negative, positive};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How OneCycleLR moves within a phase.
pub enum AnnealStrategy {
    /// Cosine annealing.
    Cos,
    /// Straight line.
    Linear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// PyTorch's OneCycleLR.
pub struct OneCycleLr {
    /// The peak rate.
    pub max_lr: f64,
    /// Updates in the cycle; update total_steps is the last one allowed.
    pub total_steps: u64,
    /// How each phase moves.
    pub anneal_strategy: AnnealStrategy,
    initial_lr: f64,
    min_lr: f64,
    /// (end_step, start rate, end rate) of each phase as built. The rates of a step are read
    /// from the group's keys (`lr_bounds`), as PyTorch reads them.
    phases: Vec<(f64, f64, f64)>,
    /// The momentum cycle (`None`: PyTorch's `cycle_momentum=False`). Absent from schedules
    /// saved before Kiln cycled momentum, which resume as they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<MomentumCycle>,
}

/// PyTorch's OneCycleLR defaults: base_momentum 0.85, max_momentum 0.95.
pub const DEFAULT_MOMENTUM: MomentumCycle = MomentumCycle {
    base_momentum: 0.85,
    max_momentum: 0.95,
};

impl OneCycleLr {
    /// Checks the parameters as PyTorch does. Momentum cycles as PyTorch's defaults say
    /// ([`DEFAULT_MOMENTUM`]) unless [`OneCycleLr::cycle_momentum`] says otherwise.
    pub fn new(
        max_lr: f64,
        total_steps: u64,
        pct_start: f64,
        anneal_strategy: AnnealStrategy,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    ) -> Result<Self> {
        non_negative("max_lr", max_lr)?;
        positive("div_factor", div_factor)?;
        positive("final_div_factor", final_div_factor)?;
        crate::count_param("total_steps", total_steps)?;
        if total_steps == 0 {
            return Err(ScheduleError::new("total_steps", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&pct_start) {
            return Err(ScheduleError::new(
                "pct_start",
                format!("must be in [0, 1], got {pct_start}"),
            ));
        }
        let initial_lr = max_lr / div_factor;
        let min_lr = initial_lr / final_div_factor;
        let n = total_steps as f64;
        let phases = if three_phase {
            vec![
                (pct_start * n - 1.0, initial_lr, max_lr),
                (2.0 * pct_start * n - 2.0, max_lr, initial_lr),
                (n - 1.0, initial_lr, min_lr),
            ]
        } else {
            vec![
                (pct_start * n - 1.0, initial_lr, max_lr),
                (n - 1.0, max_lr, min_lr),
            ]
        };
        Ok(OneCycleLr {
            max_lr,
            total_steps,
            anneal_strategy,
            initial_lr,
            min_lr,
            phases,
            momentum: Some(DEFAULT_MOMENTUM),
        })
    }

    /// The momentum cycle, or `None` for the rate alone (PyTorch's `cycle_momentum`).
    pub fn cycle_momentum(mut self, momentum: Option<MomentumCycle>) -> Self {
        self.momentum = momentum;
        self
    }

    /// Phase i's start and end rates from the group's `initial_lr`, `max_lr` and `min_lr`
    /// (the last schedule built on the group that sets them wrote them), or where the group
    /// lacks them (a schedule saved before Kiln kept them) all three the schedule's own, as it
    /// ran then.
    fn lr_bounds(&self, i: usize, group: &Group) -> (f64, f64) {
        let (initial, max, min) = match (group.initial_lr, group.max_lr, group.min_lr) {
            (Some(initial), Some(max), Some(min)) => (initial, max, min),
            _ => (self.initial_lr, self.max_lr, self.min_lr),
        };
        match (i, self.phases.len()) {
            (0, _) => (initial, max),
            (1, 2) => (max, min),
            (1, _) => (max, initial),
            _ => (initial, min),
        }
    }

    /// The phase update t falls in and how far through it (PyTorch's loop in `get_lr`).
    fn locate(&self, t: i64) -> Result<(usize, f64)> {
        if t > self.total_steps as i64 {
            return Err(ScheduleError::new(
                "total_steps",
                format!(
                    "asked for update {t}, past total_steps = {}",
                    self.total_steps
                ),
            ));
        }
        let step = t as f64;
        let mut start_step = 0.0;
        let last = self.phases.len() - 1;
        for (i, &(end_step, _, _)) in self.phases.iter().enumerate() {
            if step <= end_step || i == last {
                if end_step == start_step {
                    return Err(ScheduleError::new(
                        "pct_start",
                        format!("phase {i} is empty with total_steps = {}", self.total_steps),
                    ));
                }
                return Ok((i, (step - start_step) / (end_step - start_step)));
            }
            start_step = end_step;
        }
        unreachable!("the last phase always matches")
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.anneal_strategy {
            AnnealStrategy::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }
}

impl Rule for OneCycleLr {
    fn check(&self) -> Result<()> {
        if self.phases.is_empty() || self.total_steps == 0 {
            return Err(ScheduleError::new(
                "total_steps",
                "a restored one_cycle has no phases",
            ));
        }
        self.momentum.map_or(Ok(()), MomentumCycle::check)
    }

    fn before_init(&mut self, group: &mut Group) -> Option<f64> {
        // OneCycleLR overwrites initial_lr rather than setting a default.
        group.initial_lr = Some(self.initial_lr);
        group.max_lr = Some(self.max_lr);
        group.min_lr = Some(self.min_lr);
        if let Some(m) = self.momentum {
            m.install(group);
        }
        None
    }

    fn momentum(&self, e: &Epoch, group: &Group) -> Option<f64> {
        let m = self.momentum?.in_group(group);
        let (i, pct) = self.locate(e.t).ok()?;
        // Phase by phase: max → base, base → max, and with three phases max → max.
        let (start, end) = match i {
            0 => (m.max_momentum, m.base_momentum),
            1 => (m.base_momentum, m.max_momentum),
            _ => (m.max_momentum, m.max_momentum),
        };
        Some(self.anneal(start, end, pct))
    }

    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64> {
        let (i, pct) = self.locate(e.t)?;
        let (start_lr, end_lr) = self.lr_bounds(i, group);
        Ok(self.anneal(start_lr, end_lr, pct))
    }
}

impl OneCycleLr {
    /// The final rate, max_lr/(div_factor·final_div_factor).
    pub fn min_lr(&self) -> f64 {
        self.min_lr
    }
}
