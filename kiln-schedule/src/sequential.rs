//! Sequential: run each schedule in turn, switching at the milestones; each one starts from its
//! own step 0.
//!
//! PyTorch's construction is reproduced exactly: the children are built in order on the same
//! optimizer (each taking its initial step), then the rate is reset to the initial rate, every
//! child's step count is undone, and the child active at step 0 takes its initial step again.
//! At a milestone the next child jumps to its step 0 (its closed form where it has one).
//! Source: `torch.optim.lr_scheduler.SequentialLR`.

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Needs, Observation, Result, Schedule, ScheduleError};

#[derive(Debug, Serialize, Deserialize)]
/// PyTorch's SequentialLR.
pub struct SequentialLr {
    /// The schedules, in the order they run.
    pub schedules: Vec<Schedule>,
    /// Updates at which the next schedule starts, increasing.
    pub milestones: Vec<u64>,
    last_epoch: i64,
}

impl SequentialLr {
    /// Checks the milestones and children as described above.
    pub fn new(schedules: Vec<Schedule>, milestones: Vec<u64>) -> Result<Self> {
        Self::check_parts(&schedules, &milestones)?;
        Ok(SequentialLr {
            schedules,
            milestones,
            last_epoch: -1,
        })
    }

    fn check_parts(schedules: &[Schedule], milestones: &[u64]) -> Result<()> {
        for (i, &m) in milestones.iter().enumerate() {
            crate::count_param(&format!("milestones[{i}]"), m)?;
        }
        if schedules.is_empty() {
            return Err(ScheduleError::new(
                "schedules",
                "needs at least one schedule",
            ));
        }
        if milestones.len() + 1 != schedules.len() {
            return Err(ScheduleError::new(
                "milestones",
                format!(
                    "{} milestones for {} schedules; expected one fewer milestone than schedules",
                    milestones.len(),
                    schedules.len()
                ),
            ));
        }
        if let Some(i) = milestones.windows(2).position(|w| w[0] >= w[1]) {
            return Err(ScheduleError::new(
                "milestones",
                format!(
                    "must be increasing: {} then {}",
                    milestones[i],
                    milestones[i + 1]
                ),
            ));
        }
        for (i, s) in schedules.iter().enumerate() {
            if s.needs().loss && matches!(s, Schedule::ReduceOnPlateau(_)) {
                return Err(ScheduleError::new(
                    format!("schedules[{i}]"),
                    "reduce_on_plateau cannot be part of a sequential schedule (as in PyTorch)",
                ));
            }
            // PyTorch cannot restart a composite at a milestone (it raises NotImplementedError).
            if i > 0 && s.is_composite() {
                return Err(ScheduleError::new(
                    format!("schedules[{i}]"),
                    "a sequential or chained schedule can only be the first of a sequential",
                ));
            }
        }
        Ok(())
    }

    /// bisect_right(milestones, t)
    fn active(&self, t: i64) -> usize {
        self.milestones.iter().filter(|&&m| m as i64 <= t).count()
    }
}

impl LrSchedule for SequentialLr {
    fn construct(&mut self, group: &mut Group) -> Result<()> {
        crate::schedule::construct_children(&mut self.schedules, group)?;
        self.last_epoch = 0;
        group.lr = group.base_lr();
        self.undo();
        let idx = self.active(0);
        self.schedules[idx].initial_step(group)
    }

    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        self.last_epoch += 1;
        let idx = self.active(self.last_epoch);
        if idx > 0 && self.milestones[idx - 1] as i64 == self.last_epoch {
            self.schedules[idx].restart(group)
        } else {
            self.schedules[idx].step(group, observation)
        }
    }

    /// LRScheduler._initial_step on a SequentialLR: one ordinary step.
    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        self.step(group, &Observation::default())
    }

    /// recursive_undo reaches the leaves only; the composite's own count is kept.
    fn undo(&mut self) {
        self.schedules.iter_mut().for_each(Schedule::undo);
    }

    fn needs(&self) -> Needs {
        crate::schedule::needs_of(&self.schedules)
    }

    fn check(&self) -> Result<()> {
        crate::check_count("last_epoch", self.last_epoch)?;
        Self::check_parts(&self.schedules, &self.milestones)?;
        crate::schedule::check_children(&self.schedules)
    }
}
