//! Fixed rate: lr(t) = lr — an optimizer without a scheduler.

use serde::{Deserialize, Serialize};

use crate::epochal::{Epoch, Rule};
use crate::{Group, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A fixed rate.
pub struct Fixed;

impl Rule for Fixed {
    fn get_lr(&self, _e: &Epoch, group: &Group) -> Result<f64> {
        Ok(group.lr)
    }
    fn closed_form(&self, e: &Epoch) -> Option<f64> {
        Some(e.base)
    }
}
