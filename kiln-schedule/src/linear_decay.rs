//! Linear decay: lr(t) = max(lr·(1 − α·t), end_lr).
//! Source: the linear decay of Keras `PolynomialDecay` (power 1) and of BERT's optimizer.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearDecay {
    pub alpha: f64,
    pub end_lr: f64,
}

impl LinearDecay {
    pub fn new(alpha: f64, end_lr: f64) -> Result<Self> {
        non_negative("alpha", alpha)?;
        non_negative("end_lr", end_lr)?;
        Ok(LinearDecay { alpha, end_lr })
    }
}

impl RateRule for LinearDecay {
    fn rate(&self, base: f64, t: u64) -> f64 {
        (base * (1.0 - self.alpha * t as f64)).max(self.end_lr)
    }
}
