//! Machinery for the schedules PyTorch lacks. Each defines its rate in closed form, as a
//! function of the base rate, the update count and what it has observed. To compose like
//! PyTorch's recurrences inside `chained`, a step multiplies the current rate by the change of
//! its own rate, rate(t)/rate(t−1); when nothing else touched the rate since its last step it
//! writes rate(t) itself, so a schedule on its own gives its formula's values exactly.

use serde::{Deserialize, Serialize};

use crate::{Group, LrSchedule, Needs, Observation, Result};

/// A closed-form schedule.
pub trait RateRule: std::fmt::Debug + Send {
    /// The rate for update `t`, given the base rate.
    fn rate(&self, base: f64, t: u64) -> f64;
    /// Observation-driven rules record what was observed after an update, before `rate`.
    fn observe(&mut self, _base: f64, _observation: &Observation) {}
    /// Which observations `observe` reads.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// The parameters and state still hold what the constructor checked (a restored
    /// checkpoint may not).
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The parameters make sense with this base rate (checked when the schedule is built).
    fn check_base(&self, _base: f64) -> Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A [`RateRule`] made chainable (see the module docs).
pub struct Factored<R> {
    /// The schedule's parameters and state.
    pub rule: R,
    t: u64,
    base: f64,
    /// The rate this schedule wrote last.
    #[serde(with = "crate::float")]
    written: f64,
    /// Its own rate(t) at that time.
    own: f64,
}

impl<R: RateRule> Factored<R> {
    /// Wraps `rule`, not yet constructed.
    pub fn new(rule: R) -> Self {
        Factored {
            rule,
            t: 0,
            base: 0.0,
            written: f64::NAN,
            own: 1.0,
        }
    }

    fn apply(&mut self, group: &mut Group) {
        let own = self.rule.rate(self.base, self.t);
        group.lr = if group.lr == self.written || self.own == 0.0 {
            // Alone (or unable to take a ratio): the closed form itself.
            own
        } else {
            group.lr * (own / self.own)
        };
        self.own = own;
        self.written = group.lr;
    }
}

impl<R: RateRule> LrSchedule for Factored<R> {
    fn construct(&mut self, group: &mut Group) -> Result<()> {
        self.base = group.base_lr();
        self.rule.check_base(self.base)?;
        self.initial_step(group)
    }

    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        self.t = 0;
        // Before this schedule existed the rate was the base rate, as if written by it: alone
        // it starts at rate(0) exactly, chained it scales what earlier schedules made of it.
        self.own = self.base;
        self.written = self.base;
        self.apply(group);
        Ok(())
    }

    /// SequentialLR's milestone: this schedule's own step 0, whatever the rate was.
    fn restart(&mut self, group: &mut Group) -> Result<()> {
        self.t = 0;
        self.written = group.lr;
        self.own = self.rule.rate(self.base, 0);
        group.lr = self.own;
        self.written = group.lr;
        Ok(())
    }

    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        self.rule.observe(self.base, observation);
        self.t += 1;
        self.apply(group);
        Ok(())
    }

    fn undo(&mut self) {}

    fn needs(&self) -> Needs {
        self.rule.needs()
    }
    fn check(&self) -> Result<()> {
        crate::check_count("t", self.t.min(i64::MAX as u64) as i64)?;
        self.rule.check()
    }
}
