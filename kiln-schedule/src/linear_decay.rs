//! Linear decay: lr(t) = max(lr·(1 − α·t), end_lr).
//! Source: the linear decay of Keras `PolynomialDecay` (power 1) and of BERT's optimizer.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// lr·(1 − αt), never below `end_lr`.
pub struct LinearDecay {
    /// α, the fraction of the base rate lost per update.
    pub alpha: f64,
    /// The floor.
    pub end_lr: f64,
}

impl LinearDecay {
    /// Checks alpha ≥ 0 and end_lr ≥ 0.
    pub fn new(alpha: f64, end_lr: f64) -> Result<Self> {
        non_negative("alpha", alpha)?;
        non_negative("end_lr", end_lr)?;
        Ok(LinearDecay { alpha, end_lr })
    }
}

impl RateRule for LinearDecay {
    fn check(&self) -> Result<()> {
        Self::new(self.alpha, self.end_lr).map(drop)
    }

    fn rate(&self, base: f64, t: u64) -> f64 {
        (base * (1.0 - self.alpha * t as f64)).max(self.end_lr)
    }

    /// A floor above the base rate would hold the rate there from the first update: no decay.
    fn check_base(&self, base: f64) -> Result<()> {
        if self.end_lr > base {
            return Err(crate::ScheduleError::new(
                "end_lr",
                format!(
                    "{} is above the base rate {base}: linear_decay decays from the base rate \
                     down to end_lr",
                    self.end_lr
                ),
            ));
        }
        Ok(())
    }
}
