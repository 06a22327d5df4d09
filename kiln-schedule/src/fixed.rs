//! Fixed rate: lr(t) = lr. (PyTorch: an optimizer without a scheduler.)

use crate::{LrSchedule, ScheduleError, non_negative};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fixed {
    lr: f64,
}

impl Fixed {
    pub fn new(lr: f64) -> Result<Self, ScheduleError> {
        non_negative("lr", lr)?;
        Ok(Fixed { lr })
    }
}

impl LrSchedule for Fixed {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn step(&mut self) {}
}
