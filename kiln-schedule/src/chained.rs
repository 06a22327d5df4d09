//! Chained: every schedule steps the same rate in turn, so the rate is the product of their
//! factors (not to be confused with sequential, which runs them one after another).
//! Source: `torch.optim.lr_scheduler.ChainedScheduler`.

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Needs, Observation, Result, Schedule, ScheduleError};

#[derive(Debug, Serialize, Deserialize)]
/// Every child steps the shared rate in turn: the product of their factors.
pub struct ChainedScheduler {
    /// The children, in the order they step.
    pub schedules: Vec<Schedule>,
}

impl ChainedScheduler {
    /// Chains `schedules` (PyTorch forbids reduce_on_plateau here, and so does Kiln).
    pub fn new(schedules: Vec<Schedule>) -> Result<Self> {
        Self::check_parts(&schedules)?;
        Ok(ChainedScheduler { schedules })
    }

    fn check_parts(schedules: &[Schedule]) -> Result<()> {
        if schedules.is_empty() {
            return Err(ScheduleError::new(
                "schedules",
                "needs at least one schedule",
            ));
        }
        if let Some(i) = schedules
            .iter()
            .position(|s| matches!(s, Schedule::ReduceOnPlateau(_)))
        {
            return Err(ScheduleError::new(
                format!("schedules[{i}]"),
                "reduce_on_plateau cannot be chained (as in PyTorch)",
            ));
        }
        Ok(())
    }
}

impl LrSchedule for ChainedScheduler {
    fn check(&self) -> Result<()> {
        Self::check_parts(&self.schedules)?;
        crate::schedule::check_children(&self.schedules)
    }

    /// The children are built in order; ChainedScheduler itself takes no initial step.
    fn construct(&mut self, group: &mut Group) -> Result<()> {
        crate::schedule::construct_children(&mut self.schedules, group)?;
        Ok(())
    }

    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        for s in &mut self.schedules {
            s.step(group, observation)?;
        }
        Ok(())
    }

    fn undo(&mut self) {
        self.schedules.iter_mut().for_each(Schedule::undo);
    }

    fn needs(&self) -> Needs {
        crate::schedule::needs_of(&self.schedules)
    }
}
