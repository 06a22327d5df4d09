//! Learning-rate schedules for Kiln, computed on the host: every strategy people use, exact
#![warn(missing_docs)]
//! where PyTorch defines it.
//!
//! # Semantics
//! [`Scheduler::lr`] is the rate optimizer update t uses (PyTorch's `param_groups[0]['lr']`
//! just before the t-th `optimizer.step()`), and [`Scheduler::step`] is `scheduler.step()`,
//! called after every update with what was observed after it (the loss, the squared gradient
//! norm), which can change the rate from the next update on.
//!
//! PyTorch's schedulers are recurrences on the optimizer's shared rate, and its composites
//! (`SequentialLR`, `ChainedScheduler`) work by interleaving those recurrences. Kiln implements
//! the same protocol ([`LrSchedule`]: construction, initial step, step, and SequentialLR's
//! milestone jump and undo) in f64 with the same operations in the same order, so values equal
//! PyTorch's, rounding and quirks included. Schedules PyTorch lacks are written to the same
//! protocol and are *chainable*: each multiplies the current rate by the change of its own
//! factor, so [`Schedule::Chained`] is the product of its children.
//!
//! ```
//! use kiln_schedule::{Observation, ScheduleConfig};
//! let config = r#"
//!     kind = "warmup"
//!     lr = 0.1
//!     steps = 2
//!     start_factor = 0.5
//!     then = { kind = "cosine_annealing", t_max = 4 }
//! "#;
//! let mut s = ScheduleConfig::from_toml(config).unwrap().build(None).unwrap();
//! let mut rates = Vec::new();
//! for _ in 0..4 {
//!     rates.push(s.lr());
//!     s.step(&Observation::default()).unwrap();
//! }
//! assert_eq!(rates[..2], [0.05, 0.07500000000000001]);
//! assert_eq!(rates[2], 0.1); // the cosine starts from its own step 0
//! ```

pub mod chained;
pub mod config;
pub mod constant;
pub mod cosine_annealing;
pub mod cosine_annealing_warm_restarts;
pub mod cyclic;
pub mod epochal;
pub mod exponential;
pub mod exponential_decay;
pub mod factor;
pub mod fixed;
mod float;
pub mod inverse_sqrt;
pub mod inverse_time;
pub mod lambda;
pub mod linear;
pub mod linear_decay;
pub mod multi_step;
pub mod multiplicative;
pub mod observed;
pub mod one_cycle;
pub mod piecewise_constant;
pub mod polynomial;
pub mod reduce_on_plateau;
mod schedule;
pub mod sequential;
pub mod step;

pub use config::{Interval, Kind, Monitor, ScheduleConfig};
pub use lambda::LambdaLr;
pub use schedule::Schedule;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A schedule that cannot be built or stepped. `field` names the config key (a dotted path
/// inside composites, e.g. `schedules[1].t_max`).
#[derive(Clone, Debug, Error, PartialEq)]
#[error("invalid schedule.{field}: {reason}")]
pub struct ScheduleError {
    /// The config key, a dotted path inside composites.
    pub field: String,
    /// Why it is invalid.
    pub reason: String,
}

impl ScheduleError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ScheduleError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error inside a composite's child (`schedules[i].field`).
    pub(crate) fn within(self, prefix: &str) -> Self {
        ScheduleError {
            field: format!("{prefix}.{}", self.field),
            reason: self.reason,
        }
    }
}

/// `Result` with [`ScheduleError`].
pub type Result<T, E = ScheduleError> = std::result::Result<T, E>;

/// The optimizer state PyTorch's schedulers read and write: `param_groups[0]['lr']`,
/// `['initial_lr']` (set by the first scheduler built on the optimizer), for the schedules
/// that cycle momentum `['momentum']` or `['betas'][0]`, and the keys OneCycleLR and CyclicLR
/// write at construction. OneCycleLR reads its bounds back from the group at every step, so a
/// schedule built after it on the same group (a later child of a `sequential`) changes them,
/// as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The rate the next update uses (`group['lr']`).
    pub lr: f64,
    /// `group['initial_lr']`, set by the first schedule built on the group.
    pub initial_lr: Option<f64>,
    /// The momentum (SGD, RMSprop) or β1 (the Adam family) the next update uses, as the last
    /// schedule that cycles momentum wrote it (`cyclic`, `one_cycle`); `None` until one does,
    /// and the optimizer's own then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// `group['max_lr']` and `['min_lr']`, written by each `one_cycle` built on the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lr: Option<f64>,
    /// See `max_lr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// `group['max_momentum']` and `['base_momentum']`, written by each `one_cycle` and
    /// `cyclic` that cycles momentum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_momentum: Option<f64>,
    /// See `max_momentum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_momentum: Option<f64>,
}

impl Group {
    /// A group whose rate is `lr`, with no initial rate yet.
    pub fn new(lr: f64) -> Self {
        Group {
            lr,
            initial_lr: None,
            momentum: None,
            max_lr: None,
            min_lr: None,
            max_momentum: None,
            base_momentum: None,
        }
    }

    /// PyTorch's `group.setdefault("initial_lr", group["lr"])`, returning it: the `base_lr`
    /// of a scheduler built now.
    pub fn base_lr(&mut self) -> f64 {
        *self.initial_lr.get_or_insert(self.lr)
    }
}

/// Where a cycling schedule (`cyclic`, `one_cycle`) moves the optimizer's momentum, or β1 for
/// the Adam family, inversely to the rate: PyTorch's `base_momentum` (at the highest rate)
/// and `max_momentum` (at the lowest).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MomentumCycle {
    /// The momentum at the highest rate.
    pub base_momentum: f64,
    /// The momentum at the lowest rate, and the optimizer's momentum from construction on.
    pub max_momentum: f64,
}

impl MomentumCycle {
    /// Both finite and ≥ 0 (whether the optimizer takes them, β1 below 1 for instance, is the
    /// trainer's check, update by update).
    pub fn new(base_momentum: f64, max_momentum: f64) -> Result<Self> {
        non_negative("base_momentum", base_momentum)?;
        non_negative("max_momentum", max_momentum)?;
        Ok(MomentumCycle {
            base_momentum,
            max_momentum,
        })
    }

    /// A restored cycle still holds what [`MomentumCycle::new`] checks.
    pub(crate) fn check(self) -> Result<()> {
        MomentumCycle::new(self.base_momentum, self.max_momentum).map(|_| ())
    }

    /// PyTorch's construction-time write: the optimizer's momentum becomes `max_momentum`,
    /// and the group keeps both bounds.
    pub(crate) fn install(self, group: &mut Group) {
        group.momentum = Some(self.max_momentum);
        group.max_momentum = Some(self.max_momentum);
        group.base_momentum = Some(self.base_momentum);
    }

    /// The bounds as the group holds them now (PyTorch's OneCycleLR reads them there), where
    /// it holds them (a schedule saved before Kiln kept them: its own).
    pub(crate) fn in_group(self, group: &Group) -> MomentumCycle {
        MomentumCycle {
            base_momentum: group.base_momentum.unwrap_or(self.base_momentum),
            max_momentum: group.max_momentum.unwrap_or(self.max_momentum),
        }
    }
}

/// What was observed after an optimizer update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The training loss of the update, or the metric a plateau schedule watches.
    pub loss: Option<f64>,
    /// ‖g‖² of the update's gradient (all parameters).
    pub grad_norm_sq: Option<f64>,
}

impl Observation {
    /// One number used as whatever the schedule observes (the CLI's `--observations`).
    pub fn value(v: f64) -> Self {
        Observation {
            loss: Some(v),
            grad_norm_sq: Some(v),
        }
    }
}

/// Which observations a schedule reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The training loss (or a watched metric).
    pub loss: bool,
    /// The squared gradient norm.
    pub grad_norm: bool,
}

impl Needs {
    /// Whether anything is needed.
    pub fn any(self) -> bool {
        self.loss || self.grad_norm
    }

    pub(crate) fn or(self, other: Needs) -> Needs {
        Needs {
            loss: self.loss || other.loss,
            grad_norm: self.grad_norm || other.grad_norm,
        }
    }
}

/// PyTorch's `LRScheduler` protocol. Built-in schedules implement it, and so can user types
/// (see [`Schedule::Custom`]); most only need `initial_step` and `step`.
pub trait LrSchedule: Send + std::fmt::Debug {
    /// Construction, including PyTorch's initial step (`_initial_step`), which may set the rate
    /// for update 0.
    fn construct(&mut self, group: &mut Group) -> Result<()>;
    /// `scheduler.step()` after an update, given what was observed after it.
    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()>;
    /// SequentialLR re-running the initial step of the schedule that is active at step 0.
    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        self.step(group, &Observation::default())
    }
    /// SequentialLR's jump at a milestone (`_update_lr(0)`): restart at the schedule's step 0.
    fn restart(&mut self, group: &mut Group) -> Result<()> {
        self.initial_step(group)
    }
    /// SequentialLR's `recursive_undo`: forget the initial step taken at construction.
    fn undo(&mut self) {}
    /// Which observations `step` reads.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// The parameters and state still hold what the constructor checked: a schedule restored
    /// from a checkpoint may not, and must not then panic or divide by zero.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// A schedule attached to its optimizer group: the object a training loop drives.
#[derive(Debug, Serialize, Deserialize)]
pub struct Scheduler {
    group: Group,
    schedule: Schedule,
    updates: u64,
}

impl Scheduler {
    /// Builds the schedule on an optimizer whose rate is `lr`, running the constructor's
    /// initial step as PyTorch does.
    pub fn new(lr: f64, mut schedule: Schedule) -> Result<Self> {
        non_negative("lr", lr)?;
        // A schedule built by hand (its rules' fields are public) gets its constructors'
        // checks too: a zero step size must be an error here, not a division by zero later.
        schedule.check()?;
        let mut group = Group::new(lr);
        schedule.construct(&mut group)?;
        check_rate(group.lr, 0)?;
        Ok(Scheduler {
            group,
            schedule,
            updates: 0,
        })
    }

    /// Checks a scheduler restored from saved state (a checkpoint): every schedule's
    /// parameters and state as their constructors check them, and the current rate and
    /// momentum.
    pub fn check(&self) -> Result<()> {
        self.check_state()?;
        check_rate(self.group.lr, self.updates)
    }

    /// Why the rate for the next update cannot be used, if it cannot (a schedule saved at the
    /// end of a run it has no rate past: a three-phase linear `one_cycle`).
    pub fn rate_refusal(&self) -> Option<ScheduleError> {
        check_rate(self.group.lr, self.updates).err()
    }

    /// [`Scheduler::check`] but for the current rate ([`Scheduler::rate_refusal`]): what a
    /// restored scheduler must hold to be resumed at all.
    pub fn check_state(&self) -> Result<()> {
        check_count("updates", self.updates.min(i64::MAX as u64) as i64)?;
        self.schedule.check()?;
        // Set from construction on exactly when a schedule inside cycles it: a trainer sizes
        // the momentum buffers by it.
        if self.schedule.cycles_momentum() != self.group.momentum.is_some() {
            return Err(ScheduleError::new(
                "momentum",
                "the saved momentum does not match whether the schedule cycles it (a damaged \
                 checkpoint?)",
            ));
        }
        let g = &self.group;
        for (field, v) in [
            ("momentum", g.momentum),
            ("initial_lr", g.initial_lr),
            ("max_lr", g.max_lr),
            ("min_lr", g.min_lr),
            ("max_momentum", g.max_momentum),
            ("base_momentum", g.base_momentum),
        ] {
            if let Some(v) = v {
                non_negative(field, v)?;
            }
        }
        Ok(())
    }

    /// Builds a schedule of `kind` on base rate `lr`.
    ///
    /// ```
    /// use kiln_schedule::{Kind, Scheduler};
    /// let mut s = Scheduler::from_kind(0.1, Kind::Step { step_size: 2, gamma: 0.5 })?;
    /// assert_eq!(s.rates(5)?, [0.1, 0.1, 0.05, 0.05, 0.025]);
    /// # Ok::<(), kiln_schedule::ScheduleError>(())
    /// ```
    pub fn from_kind(lr: f64, kind: Kind) -> Result<Self> {
        Scheduler::new(lr, kind.build()?)
    }

    /// A fixed rate.
    pub fn fixed(lr: f64) -> Result<Self> {
        Scheduler::from_kind(lr, Kind::Fixed {})
    }

    /// The rate for the next update.
    pub fn lr(&self) -> f64 {
        self.group.lr
    }

    /// The momentum (SGD, RMSprop) or β1 (Adam, AdamW, NAdam, RAdam, Adamax) for the next update,
    /// where the schedule cycles it as PyTorch's `CyclicLR` and `OneCycleLR` do by default
    /// (`cycle_momentum`); `None` leaves the optimizer's own. Set from construction on, so
    /// `Some` right after [`Scheduler::new`] means the optimizer must have a momentum to cycle.
    ///
    /// ```
    /// use kiln_schedule::ScheduleConfig;
    /// let c = "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 10";
    /// let s = ScheduleConfig::from_toml(c).unwrap().build(None).unwrap();
    /// assert_eq!(s.momentum(), Some(0.95)); // max_momentum, while the rate is lowest
    /// ```
    pub fn momentum(&self) -> Option<f64> {
        self.group.momentum
    }

    /// Whether a schedule inside cycles the momentum ([`Schedule::cycles_momentum`]).
    pub fn cycles_momentum(&self) -> bool {
        self.schedule.cycles_momentum()
    }

    /// Updates done so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Whether the state can be saved (no closures or user types inside).
    pub fn can_save(&self) -> bool {
        self.schedule.can_save()
    }

    /// Which observations [`Scheduler::step`] needs.
    pub fn needs(&self) -> Needs {
        self.schedule.needs()
    }

    /// Advances past one update, given what was observed after it.
    pub fn step(&mut self, observation: &Observation) -> Result<()> {
        let needs = self.needs();
        if needs.loss && observation.loss.is_none() {
            return Err(ScheduleError::new(
                "kind",
                format!(
                    "needs the loss (or metric) observed after update {}",
                    self.updates
                ),
            ));
        }
        if needs.grad_norm && observation.grad_norm_sq.is_none() {
            return Err(ScheduleError::new(
                "kind",
                format!(
                    "needs the squared gradient norm observed after update {}",
                    self.updates
                ),
            ));
        }
        for (name, v) in [
            ("loss", observation.loss),
            ("grad_norm_sq", observation.grad_norm_sq),
        ] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(ScheduleError::new(
                    "observation",
                    format!("{name} after update {} is {v}", self.updates),
                ));
            }
        }
        if let Some(v) = observation
            .grad_norm_sq
            .filter(|&v| needs.grad_norm && v < 0.0)
        {
            return Err(ScheduleError::new(
                "observation",
                format!(
                    "grad_norm_sq after update {} is {v}, but a squared norm is never negative",
                    self.updates
                ),
            ));
        }
        self.schedule.step(&mut self.group, observation)?;
        self.updates += 1;
        check_rate(self.group.lr, self.updates)
    }

    /// The first `n` rates with no observations (for schedules that need none).
    pub fn rates(&mut self, n: usize) -> Result<Vec<f64>> {
        // Grown as the rates come, not reserved for any n asked.
        let mut out = Vec::with_capacity(n.min(1 << 16));
        for i in 0..n {
            out.push(self.lr());
            if i + 1 < n {
                self.step(&Observation::default())?;
            }
        }
        Ok(out)
    }
}

/// A rate must be finite and ≥ 0. PyTorch's recurrences can leave that range in degenerate
/// compositions (a cosine whose eta_min exceeds the rate it anneals, chained past t_max with a
/// decay); PyTorch would pass such a rate to the optimizer, Kiln stops with an error instead.
fn check_rate(lr: f64, update: u64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(ScheduleError::new(
            "kind",
            format!("the rate for update {update} is {lr}; a rate must be finite and >= 0"),
        ))
    }
}

/// The largest count a restored schedule may hold: 2^53, past which an f64 no longer counts
/// one by one and far past any run (10^15 updates). Larger values come from a damaged
/// checkpoint, and incrementing them could overflow.
pub(crate) const MAX_COUNT: u64 = 1 << 53;

/// Errs unless a count in a schedule's settings (a length in updates, a milestone) is at
/// most [`MAX_COUNT`]: schedules count in i64 and f64.
pub(crate) fn count_param(field: &str, value: u64) -> Result<()> {
    if value <= MAX_COUNT {
        Ok(())
    } else {
        Err(ScheduleError::new(
            field,
            format!("{value} is more updates than a schedule counts (at most 2^53)"),
        ))
    }
}

/// The lowest count a restored schedule may hold. A schedule not yet built counts -1, and a
/// `sequential` undoes its leaves' initial steps once per level of nesting (PyTorch's
/// `recursive_undo`), so the first leaf of sequentials nested n deep counts −n; no file nests
/// anywhere near this deep.
pub(crate) const MIN_COUNT: i64 = -(1 << 20);

/// Errs unless a restored counter lies in `[MIN_COUNT, MAX_COUNT]`.
pub(crate) fn check_count(field: &str, value: i64) -> Result<()> {
    if (MIN_COUNT..=MAX_COUNT as i64).contains(&value) {
        Ok(())
    } else {
        Err(ScheduleError::new(
            field,
            format!("the restored count {value} is out of range (a damaged checkpoint?)"),
        ))
    }
}

/// Errs unless `value` is finite and ≥ 0.
pub(crate) fn non_negative(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ScheduleError::new(
            field,
            format!("must be finite and >= 0, got {value}"),
        ))
    }
}

/// Errs unless `value` is finite and > 0.
pub(crate) fn positive(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ScheduleError::new(
            field,
            format!("must be finite and > 0, got {value}"),
        ))
    }
}
