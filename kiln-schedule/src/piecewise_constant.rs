//! Piecewise constant: `values[0]` up to and including update `boundaries[0]`, `values[1]` up
//! to `boundaries[1]`, …, the last value afterwards. The values are rates; the base rate is unused.
//! Source: Keras `PiecewiseConstantDecay`.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Result, ScheduleError, non_negative};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// Keras's PiecewiseConstantDecay.
pub struct PiecewiseConstant {
    /// Updates after which the next value applies, increasing.
    pub boundaries: Vec<u64>,
    /// The rates, one more than the boundaries.
    pub values: Vec<f64>,
}

impl PiecewiseConstant {
    /// Checks the lengths, order and values.
    pub fn new(boundaries: Vec<u64>, values: Vec<f64>) -> Result<Self> {
        if values.len() != boundaries.len() + 1 {
            return Err(ScheduleError::new(
                "values",
                format!(
                    "{} values for {} boundaries; expected one more value than boundaries",
                    values.len(),
                    boundaries.len()
                ),
            ));
        }
        if let Some(i) = boundaries.windows(2).position(|w| w[0] >= w[1]) {
            return Err(ScheduleError::new(
                "boundaries",
                format!(
                    "must be increasing: {} then {}",
                    boundaries[i],
                    boundaries[i + 1]
                ),
            ));
        }
        for (i, v) in values.iter().enumerate() {
            non_negative(&format!("values[{i}]"), *v)?;
        }
        Ok(PiecewiseConstant { boundaries, values })
    }
}

impl RateRule for PiecewiseConstant {
    fn check(&self) -> Result<()> {
        Self::new(self.boundaries.clone(), self.values.clone()).map(drop)
    }

    fn rate(&self, _base: f64, t: u64) -> f64 {
        self.values[self.boundaries.iter().filter(|&&b| t > b).count()]
    }
}
