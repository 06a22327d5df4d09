//! Inverse-time decay: lr(t) = lr / (1 + γ·t).
//! Source: Keras `InverseTimeDecay` (with decay_steps = 1); Bottou, "Stochastic Gradient
//! Descent Tricks" (2012).

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// lr/(1 + γt).
pub struct InverseTime {
    /// γ, the decay per update.
    pub gamma: f64,
}

impl InverseTime {
    /// Checks gamma ≥ 0.
    pub fn new(gamma: f64) -> Result<Self> {
        non_negative("gamma", gamma)?;
        Ok(InverseTime { gamma })
    }
}

impl RateRule for InverseTime {
    fn check(&self) -> Result<()> {
        Self::new(self.gamma).map(drop)
    }

    fn rate(&self, base: f64, t: u64) -> f64 {
        base / (1.0 + self.gamma * t as f64)
    }
}
