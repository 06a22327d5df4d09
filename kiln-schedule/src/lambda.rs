//! A rate from a closure: lr(t) = lr·f(t). Like PyTorch's LambdaLR it sets the rate from the
//! base (inside `chained` it overrides what came before, as in PyTorch). Its state is only the
//! step count; the closure itself cannot be saved.
//! Source: `torch.optim.lr_scheduler.LambdaLR`.

use std::sync::Arc;

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result, ScheduleError};

#[derive(Clone)]
/// PyTorch's LambdaLR: lr·f(t) for a closure f.
pub struct LambdaLr {
    f: Arc<dyn Fn(u64) -> f64 + Send + Sync>,
}

impl LambdaLr {
    /// A schedule of lr·f(t).
    pub fn new(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        LambdaLr { f: Arc::new(f) }
    }
}

impl std::fmt::Debug for LambdaLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LambdaLr(<closure>)")
    }
}

impl Rule for LambdaLr {
    fn get_lr(&self, e: &Epoch, _group: &Group) -> Result<f64> {
        let factor = (self.f)(e.t.max(0) as u64);
        if !factor.is_finite() {
            return Err(ScheduleError::new(
                "lambda",
                format!("returned {factor} for update {}", e.t),
            ));
        }
        Ok(e.base * factor)
    }
}
