//! Inverse square-root decay: lr(t) = lr / √(1 + γ·t).
//! Source: Vaswani et al., "Attention Is All You Need" (2017), after warmup; fairseq's
//! `inverse_sqrt` schedule.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// lr/√(1 + γt).
pub struct InverseSqrt {
    /// γ, the decay per update.
    pub gamma: f64,
}

impl InverseSqrt {
    /// Checks gamma ≥ 0.
    pub fn new(gamma: f64) -> Result<Self> {
        non_negative("gamma", gamma)?;
        Ok(InverseSqrt { gamma })
    }
}

impl RateRule for InverseSqrt {
    fn check(&self) -> Result<()> {
        Self::new(self.gamma).map(drop)
    }

    fn rate(&self, base: f64, t: u64) -> f64 {
        base / (1.0 + self.gamma * t as f64).sqrt()
    }
}
