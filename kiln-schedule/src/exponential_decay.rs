//! Exponential decay per `decay_steps`: lr·rate^(t/steps), or lr·rate^⌊t/steps⌋ with
//! `staircase` (a staircase schedule).
//! Source: Keras `ExponentialDecay`.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, ScheduleError, positive};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// Keras's ExponentialDecay.
pub struct ExponentialDecay {
    /// Factor per `decay_steps` updates.
    pub decay_rate: f64,
    /// Updates per factor of `decay_rate`.
    pub decay_steps: u64,
    /// Step down at whole multiples of `decay_steps` only.
    pub staircase: bool,
}

impl ExponentialDecay {
    /// Checks the parameters.
    pub fn new(decay_rate: f64, decay_steps: u64, staircase: bool) -> Result<Self> {
        positive("decay_rate", decay_rate)?;
        if decay_steps == 0 {
            return Err(ScheduleError::new("decay_steps", "must be at least 1"));
        }
        Ok(ExponentialDecay {
            decay_rate,
            decay_steps,
            staircase,
        })
    }
}

impl RateRule for ExponentialDecay {
    fn check(&self) -> Result<()> {
        Self::new(self.decay_rate, self.decay_steps, self.staircase).map(drop)
    }

    fn rate(&self, base: f64, t: u64) -> f64 {
        let p = if self.staircase {
            (t / self.decay_steps) as f64
        } else {
            t as f64 / self.decay_steps as f64
        };
        base * self.decay_rate.powf(p)
    }
}
