//! Learning-rate schedules for Kiln, computed on the host.
//!
//! Semantics follow PyTorch's `torch.optim.lr_scheduler`: [`LrSchedule::lr`] is the rate the
//! next optimizer update uses (`param_groups[0]['lr']` just before `optimizer.step()`), and
//! [`LrSchedule::step`] is `scheduler.step()`, called after every update. Where PyTorch defines
//! a schedule by a recurrence on the current rate, Kiln runs the same recurrence in f64, so the
//! numbers match PyTorch's, rounding included.
//!
//! ```
//! use kiln_schedule::{CosineAnnealingLr, LrSchedule};
//! let mut s = CosineAnnealingLr::new(0.1, 10, 0.0).unwrap();
//! let rates: Vec<f64> = (0..3).map(|_| { let lr = s.lr(); s.step(); lr }).collect();
//! assert_eq!(rates[0], 0.1);
//! assert!(rates[1] < rates[0]);
//! ```

mod cosine_annealing;
mod fixed;
mod step;

pub use cosine_annealing::CosineAnnealingLr;
pub use fixed::Fixed;
pub use step::StepLr;

use thiserror::Error;

/// A schedule parameter out of range. The message names the field.
#[derive(Debug, Error, PartialEq)]
#[error("invalid schedule.{field}: {reason}")]
pub struct ScheduleError {
    pub field: &'static str,
    pub reason: String,
}

/// A learning-rate schedule, stepped once per optimizer update.
pub trait LrSchedule: Send {
    /// The rate for the next update.
    fn lr(&self) -> f64;
    /// Advances past one update (PyTorch's `scheduler.step()`).
    fn step(&mut self);
}

/// Errs unless `value` is finite and ≥ 0.
pub(crate) fn non_negative(field: &'static str, value: f64) -> Result<(), ScheduleError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ScheduleError {
            field,
            reason: format!("must be finite and >= 0, got {value}"),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::LrSchedule;

    /// The first `n` rates of `s`.
    pub fn rates(s: &mut dyn LrSchedule, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let lr = s.lr();
                s.step();
                lr
            })
            .collect()
    }

    /// Asserts `got` equals `want` to 1e-12 relative (PyTorch-exact up to printing).
    pub fn assert_rates(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (t, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-12 * w.abs().max(1e-300);
            assert!((g - w).abs() <= tol, "step {t}: got {g:e}, want {w:e}");
        }
    }
}
