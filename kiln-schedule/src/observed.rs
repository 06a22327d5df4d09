//! The observation-driven schedules (not in PyTorch): the rate follows the loss or the
//! gradient norm observed after each update, changing from the next update on.

use serde::{Deserialize, Serialize};

use crate::factor::RateRule;
use crate::{Needs, Observation, Result, ScheduleError, non_negative};

const LOSS: Needs = Needs {
    loss: true,
    grad_norm: false,
};

/// Loss-threshold halving: multiply the rate by `factor` the first time the loss falls below
/// each threshold. Source: the "reduce when a target loss is reached" rule of classic
/// back-propagation practice (e.g. Orr & Müller, "Neural Networks: Tricks of the Trade").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossMilestones {
    /// Losses below which the rate is multiplied, once each.
    pub thresholds: Vec<f64>,
    /// Factor per threshold crossed.
    pub factor: f64,
    reached: Vec<bool>,
}

impl LossMilestones {
    /// Checks the thresholds and factor.
    pub fn new(thresholds: Vec<f64>, factor: f64) -> Result<Self> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(ScheduleError::new(
                "factor",
                format!("must be in (0, 1]: the rate decays at each threshold; got {factor}"),
            ));
        }
        if let Some(i) = thresholds.iter().position(|t| !t.is_finite()) {
            return Err(ScheduleError::new(
                format!("thresholds[{i}]"),
                "must be finite",
            ));
        }
        Ok(LossMilestones {
            reached: vec![false; thresholds.len()],
            thresholds,
            factor,
        })
    }
}

impl RateRule for LossMilestones {
    fn check(&self) -> Result<()> {
        Self::new(self.thresholds.clone(), self.factor)?;
        if self.reached.len() != self.thresholds.len() {
            return Err(ScheduleError::new(
                "thresholds",
                "the restored state does not match the thresholds",
            ));
        }
        Ok(())
    }

    fn rate(&self, base: f64, _t: u64) -> f64 {
        let passed = self.reached.iter().filter(|r| **r).count();
        base * self.factor.powf(passed as f64)
    }

    fn observe(&mut self, _base: f64, o: &Observation) {
        if let Some(loss) = o.loss {
            for (reached, threshold) in self.reached.iter_mut().zip(&self.thresholds) {
                *reached |= loss < *threshold;
            }
        }
    }

    fn needs(&self) -> Needs {
        LOSS
    }
}

/// "Bold driver": the loss rose → rate·decrease; it fell → rate·increase; kept within
/// [min_lr, max_lr]. Source: Battiti, "Accelerated backpropagation learning: two optimization
/// methods" (1989); Vogl et al. (1988).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoldDriver {
    /// Factor when the loss rose.
    pub decrease: f64,
    /// Factor when the loss fell.
    pub increase: f64,
    /// Lowest rate.
    pub min_lr: f64,
    #[serde(with = "crate::float")]
    /// Highest rate.
    pub max_lr: f64,
    current: Option<f64>,
    previous_loss: Option<f64>,
}

impl BoldDriver {
    /// Checks the factors and bounds.
    pub fn new(decrease: f64, increase: f64, min_lr: f64, max_lr: f64) -> Result<Self> {
        if !(decrease > 0.0 && decrease <= 1.0) {
            return Err(ScheduleError::new(
                "decrease",
                format!("must be in (0, 1]: the rate shrinks when the loss rises; got {decrease}"),
            ));
        }
        if !(increase.is_finite() && increase >= 1.0) {
            return Err(ScheduleError::new(
                "increase",
                format!(
                    "must be finite and >= 1: the rate grows when the loss falls; got {increase}"
                ),
            ));
        }
        non_negative("min_lr", min_lr)?;
        if max_lr.is_nan() || max_lr < min_lr {
            return Err(ScheduleError::new(
                "max_lr",
                format!("must be >= min_lr ({min_lr}), got {max_lr}"),
            ));
        }
        Ok(BoldDriver {
            decrease,
            increase,
            min_lr,
            max_lr,
            current: None,
            previous_loss: None,
        })
    }
}

impl RateRule for BoldDriver {
    fn check(&self) -> Result<()> {
        Self::new(self.decrease, self.increase, self.min_lr, self.max_lr).map(drop)
    }

    fn rate(&self, base: f64, _t: u64) -> f64 {
        self.current.unwrap_or(base)
    }

    fn observe(&mut self, base: f64, o: &Observation) {
        let Some(loss) = o.loss else { return };
        let lr = self.current.unwrap_or(base);
        if let Some(previous) = self.previous_loss {
            let scaled = if loss > previous {
                lr * self.decrease
            } else if loss < previous {
                lr * self.increase
            } else {
                lr
            };
            self.current = Some(scaled.clamp(self.min_lr, self.max_lr));
        }
        self.previous_loss = Some(loss);
    }

    fn needs(&self) -> Needs {
        LOSS
    }
}

/// Gradient-norm adaptive (AdaGrad-Norm): lr(t+1) = lr / √(1 + β·Σ_{i≤t} ‖g_i‖²).
/// Source: Ward, Wu & Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex landscapes"
/// (2019).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradNormAdaptive {
    /// β, the weight of the accumulated squared norms.
    pub beta: f64,
    sum: f64,
}

impl GradNormAdaptive {
    /// Checks beta ≥ 0.
    pub fn new(beta: f64) -> Result<Self> {
        non_negative("beta", beta)?;
        Ok(GradNormAdaptive { beta, sum: 0.0 })
    }
}

impl RateRule for GradNormAdaptive {
    fn check(&self) -> Result<()> {
        Self::new(self.beta).map(drop)
    }

    fn rate(&self, base: f64, _t: u64) -> f64 {
        base / (1.0 + self.beta * self.sum).sqrt()
    }

    fn observe(&mut self, _base: f64, o: &Observation) {
        self.sum += o.grad_norm_sq.unwrap_or(0.0);
    }

    fn needs(&self) -> Needs {
        Needs {
            loss: false,
            grad_norm: true,
        }
    }
}

/// Loss-adaptive: lr(t+1) = lr / (1 + β·loss_t), large steps while the loss is small.
/// Source: the loss-scaled step of Polyak-type rules (Polyak, "Introduction to Optimization",
/// 1987), in the damped form used by Loizou et al. (2021).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossAdaptive {
    /// β, the weight of the loss.
    pub beta: f64,
    last_loss: Option<f64>,
}

impl LossAdaptive {
    /// Checks beta ≥ 0.
    pub fn new(beta: f64) -> Result<Self> {
        non_negative("beta", beta)?;
        Ok(LossAdaptive {
            beta,
            last_loss: None,
        })
    }
}

impl RateRule for LossAdaptive {
    fn check(&self) -> Result<()> {
        Self::new(self.beta).map(drop)
    }

    fn rate(&self, base: f64, _t: u64) -> f64 {
        match self.last_loss {
            Some(loss) => base / (1.0 + self.beta * loss),
            None => base,
        }
    }

    fn observe(&mut self, _base: f64, o: &Observation) {
        if o.loss.is_some() {
            self.last_loss = o.loss;
        }
    }

    fn needs(&self) -> Needs {
        LOSS
    }
}
