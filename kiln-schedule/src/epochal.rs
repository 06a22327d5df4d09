//! The machinery of PyTorch's `LRScheduler` base class, shared by every schedule that derives
//! from it: `last_epoch`, `_step_count`, `base_lrs` and the initial step, with the schedule's
//! own `get_lr` (a recurrence on the current rate) and `_get_closed_form_lr` plugged in.

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Needs, Observation, Result};

/// What `get_lr` may read, as PyTorch's scheduler attributes.
#[derive(Clone, Copy, Debug)]
pub struct Epoch {
    /// `last_epoch`: updates done (0 at the initial step).
    pub t: i64,
    /// `_step_count`.
    pub step_count: u64,
    /// `base_lrs[0]`.
    pub base: f64,
    /// `_is_initial`: inside the constructor's initial step.
    pub initial: bool,
}

/// One PyTorch `LRScheduler` subclass: its `get_lr` and, where it has one,
/// `_get_closed_form_lr` (used by SequentialLR at a milestone).
pub trait Rule: std::fmt::Debug + Send {
    /// PyTorch's `get_lr`: the next rate, from the current one.
    fn get_lr(&self, e: &Epoch, group: &Group) -> Result<f64>;
    /// The momentum `get_lr` writes into the group as a side effect (the schedules that cycle
    /// momentum), for the same step; called only after `get_lr` succeeded.
    fn momentum(&self, _e: &Epoch, _group: &Group) -> Option<f64> {
        None
    }
    /// PyTorch's `_get_closed_form_lr`, where the class has one.
    fn closed_form(&self, _e: &Epoch) -> Option<f64> {
        None
    }
    /// Constructor effects before `LRScheduler.__init__` (CyclicLR sets the rate, OneCycleLR
    /// the initial rate). Returns a `base_lr` that replaces the group's `initial_lr`.
    fn before_init(&mut self, _group: &mut Group) -> Option<f64> {
        None
    }
    /// Observation-driven rules update their state here, before `get_lr`.
    fn observe(&mut self, _observation: &Observation) {}
    /// Which observations `observe` reads.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// The parameters and state still hold what the constructor checked (a restored
    /// checkpoint may not).
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A [`Rule`] with the `LRScheduler` state around it (`last_epoch`, `_step_count`, base rate).
pub struct Epochal<R> {
    /// The schedule's own parameters and state.
    pub rule: R,
    last_epoch: i64,
    step_count: u64,
    base: f64,
}

impl<R: Rule> Epochal<R> {
    /// Wraps `rule`, not yet constructed.
    pub fn new(rule: R) -> Self {
        Epochal {
            rule,
            last_epoch: -1,
            step_count: 0,
            base: 0.0,
        }
    }

    fn epoch(&self, initial: bool) -> Epoch {
        Epoch {
            t: self.last_epoch,
            step_count: self.step_count,
            base: self.base,
            initial,
        }
    }

    /// `LRScheduler.step()` (with `_is_initial` as given).
    fn advance(&mut self, group: &mut Group, initial: bool) -> Result<()> {
        self.step_count += 1;
        self.last_epoch += 1;
        let e = self.epoch(initial);
        group.lr = self.rule.get_lr(&e, group)?;
        self.write_momentum(&e, group);
        Ok(())
    }

    fn write_momentum(&self, e: &Epoch, group: &mut Group) {
        if let Some(m) = self.rule.momentum(e, group) {
            group.momentum = Some(m);
        }
    }
}

impl<R: Rule> LrSchedule for Epochal<R> {
    fn construct(&mut self, group: &mut Group) -> Result<()> {
        let base_override = self.rule.before_init(group);
        self.base = group.base_lr();
        if let Some(base) = base_override {
            self.base = base;
        }
        self.initial_step(group)
    }

    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        self.step_count = 0;
        self.advance(group, true)
    }

    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        self.rule.observe(observation);
        self.advance(group, false)
    }

    fn restart(&mut self, group: &mut Group) -> Result<()> {
        self.last_epoch = 0;
        let e = self.epoch(false);
        group.lr = match self.rule.closed_form(&e) {
            Some(lr) => lr,
            None => {
                // `get_lr`, side effects included.
                let lr = self.rule.get_lr(&e, group)?;
                self.write_momentum(&e, group);
                lr
            }
        };
        Ok(())
    }

    fn undo(&mut self) {
        self.last_epoch -= 1;
    }

    fn needs(&self) -> Needs {
        self.rule.needs()
    }
    fn check(&self) -> Result<()> {
        crate::check_count("last_epoch", self.last_epoch)?;
        crate::check_count("step_count", self.step_count.min(i64::MAX as u64) as i64)?;
        self.rule.check()
    }
}
