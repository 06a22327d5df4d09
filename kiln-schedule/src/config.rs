//! Schedules from TOML: a `[schedule]` table whose `kind` is the snake_case name and whose
//! keys are PyTorch's constructor arguments in snake_case, with PyTorch's defaults. `lr` (the
//! base rate) belongs to the outermost table only. Integers are accepted for floats.

use serde::{Deserialize, Serialize};

use crate::chained::ChainedScheduler;
use crate::constant::ConstantLr;
use crate::cosine_annealing::CosineAnnealingLr;
use crate::cosine_annealing_warm_restarts::CosineAnnealingWarmRestarts;
use crate::cyclic::{CyclicLr, CyclicMode};
use crate::epochal::Epochal;
use crate::exponential::ExponentialLr;
use crate::exponential_decay::ExponentialDecay;
use crate::factor::Factored;
use crate::fixed::Fixed;
use crate::inverse_sqrt::InverseSqrt;
use crate::inverse_time::InverseTime;
use crate::linear::LinearLr;
use crate::linear_decay::LinearDecay;
use crate::multi_step::MultiStepLr;
use crate::multiplicative::MultiplicativeLr;
use crate::observed::{BoldDriver, GradNormAdaptive, LossAdaptive, LossMilestones};
use crate::one_cycle::{AnnealStrategy, OneCycleLr};
use crate::piecewise_constant::PiecewiseConstant;
use crate::polynomial::PolynomialLr;
use crate::reduce_on_plateau::{PlateauMode, ReduceLrOnPlateau, ThresholdMode};
use crate::sequential::SequentialLr;
use crate::step::StepLr;
use crate::{LrSchedule, MomentumCycle, Result, Schedule, ScheduleError, Scheduler, non_negative};

fn third() -> f64 {
    1.0 / 3.0
}
fn one() -> f64 {
    1.0
}
fn five() -> u64 {
    5
}
fn u1() -> u64 {
    1
}
fn tenth() -> f64 {
    0.1
}
fn half() -> f64 {
    0.5
}
fn infinity() -> f64 {
    f64::INFINITY
}
fn yes() -> bool {
    true
}
fn cyclic_base_momentum() -> f64 {
    crate::cyclic::DEFAULT_MOMENTUM.base_momentum
}
fn cyclic_max_momentum() -> f64 {
    crate::cyclic::DEFAULT_MOMENTUM.max_momentum
}
fn one_cycle_base_momentum() -> f64 {
    crate::one_cycle::DEFAULT_MOMENTUM.base_momentum
}
fn one_cycle_max_momentum() -> f64 {
    crate::one_cycle::DEFAULT_MOMENTUM.max_momentum
}

/// OneCycleLR's length: `total_steps`, else `epochs`·`steps_per_epoch`, as PyTorch reads them.
fn one_cycle_steps(
    total_steps: Option<u64>,
    epochs: Option<u64>,
    steps_per_epoch: Option<u64>,
) -> Result<u64> {
    match (total_steps, epochs, steps_per_epoch) {
        (Some(n), _, _) => Ok(n),
        (None, Some(e), Some(s)) => {
            for (field, v) in [("epochs", e), ("steps_per_epoch", s)] {
                if v == 0 {
                    return Err(ScheduleError::new(field, "must be at least 1"));
                }
            }
            e.checked_mul(s)
                .filter(|&n| n <= crate::MAX_COUNT)
                .ok_or_else(|| {
                    ScheduleError::new(
                        "epochs",
                        format!(
                            "{e} epochs of {s} steps is more updates than a schedule counts \
                             (at most 2^53)"
                        ),
                    )
                })
        }
        _ => Err(ScheduleError::new(
            "total_steps",
            "missing: give total_steps, or epochs and steps_per_epoch",
        )),
    }
}

/// PyTorch's `cycle_momentum`, `base_momentum` and `max_momentum` as a cycle or none. The
/// bounds are checked either way (PyTorch ignores them unless it cycles).
fn momentum_cycle(cycle: bool, base: f64, max: f64) -> Result<Option<MomentumCycle>> {
    let bounds = MomentumCycle::new(base, max)?;
    Ok(cycle.then_some(bounds))
}

/// One schedule's settings, without the base rate: the `kind` and PyTorch's constructor
/// arguments in snake_case, with PyTorch's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// A fixed rate.
    Fixed {},
    /// PyTorch's ConstantLR: lr·factor for the first total_iters updates.
    Constant {
        #[serde(default = "third")]
        /// The factor (see the variant).
        factor: f64,
        #[serde(default = "five")]
        /// Length in updates.
        total_iters: u64,
    },
    /// PyTorch's LinearLR: the factor moves linearly from start_factor to end_factor.
    Linear {
        #[serde(default = "third")]
        /// Factor at update 0.
        start_factor: f64,
        #[serde(default = "one")]
        /// Factor at the end.
        end_factor: f64,
        #[serde(default = "five")]
        /// Length in updates.
        total_iters: u64,
    },
    /// PyTorch's StepLR: ×gamma every step_size updates.
    Step {
        /// Updates between decays.
        step_size: u64,
        #[serde(default = "tenth")]
        /// The decay factor γ.
        gamma: f64,
    },
    /// PyTorch's MultiStepLR: ×gamma at each milestone.
    MultiStep {
        /// Updates at which the rate changes (or the next schedule starts).
        milestones: Vec<u64>,
        #[serde(default = "tenth")]
        /// The decay factor γ.
        gamma: f64,
    },
    /// PyTorch's ExponentialLR: ×gamma every update.
    Exponential {
        /// The decay factor γ.
        gamma: f64,
    },
    /// PyTorch's PolynomialLR: to zero over total_iters updates.
    Polynomial {
        #[serde(default = "five")]
        /// Length in updates.
        total_iters: u64,
        #[serde(default = "one")]
        /// Exponent of the decay.
        power: f64,
    },
    /// PyTorch's CosineAnnealingLR.
    CosineAnnealing {
        /// Half period in updates.
        t_max: u64,
        #[serde(default)]
        /// Lowest rate.
        eta_min: f64,
    },
    /// PyTorch's CosineAnnealingWarmRestarts (SGDR).
    CosineAnnealingWarmRestarts {
        /// Updates until the first restart.
        t_0: u64,
        #[serde(default = "u1")]
        /// Growth of each period.
        t_mult: u64,
        #[serde(default)]
        /// Lowest rate.
        eta_min: f64,
    },
    /// PyTorch's CyclicLR.
    Cyclic {
        /// Bottom of the cycle.
        base_lr: f64,
        /// The highest rate.
        max_lr: f64,
        #[serde(default = "default_step_size_up")]
        /// Updates rising.
        step_size_up: u64,
        #[serde(default)]
        /// Updates falling (default: step_size_up).
        step_size_down: Option<u64>,
        #[serde(default = "default_cyclic_mode")]
        /// The variant's mode.
        mode: CyclicMode,
        #[serde(default = "one")]
        /// The decay factor γ.
        gamma: f64,
        #[serde(default = "yes")]
        /// Cycle the optimizer's momentum (β1) inversely to the rate.
        cycle_momentum: bool,
        #[serde(default = "cyclic_base_momentum")]
        /// The momentum at the highest rate.
        base_momentum: f64,
        #[serde(default = "cyclic_max_momentum")]
        /// The momentum at the lowest rate.
        max_momentum: f64,
    },
    /// PyTorch's OneCycleLR.
    OneCycle {
        /// The highest rate.
        max_lr: f64,
        /// Updates in the cycle (or give `epochs` and `steps_per_epoch`, as PyTorch allows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_steps: Option<u64>,
        /// With `steps_per_epoch`, total_steps = epochs·steps_per_epoch (where no total_steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epochs: Option<u64>,
        /// See `epochs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps_per_epoch: Option<u64>,
        #[serde(default = "default_pct_start")]
        /// Fraction of the cycle spent rising.
        pct_start: f64,
        #[serde(default = "default_anneal")]
        /// "cos" or "linear".
        anneal_strategy: AnnealStrategy,
        #[serde(default = "default_div_factor")]
        /// Initial rate = max_lr/div_factor.
        div_factor: f64,
        #[serde(default = "default_final_div_factor")]
        /// Final rate = initial/final_div_factor.
        final_div_factor: f64,
        #[serde(default)]
        /// Back down to the initial rate before annealing.
        three_phase: bool,
        #[serde(default = "yes")]
        /// Cycle the optimizer's momentum (β1) inversely to the rate.
        cycle_momentum: bool,
        #[serde(default = "one_cycle_base_momentum")]
        /// The momentum at the highest rate.
        base_momentum: f64,
        #[serde(default = "one_cycle_max_momentum")]
        /// The momentum at the lowest rate.
        max_momentum: f64,
    },
    /// PyTorch's MultiplicativeLR with a constant factor.
    Multiplicative {
        /// The factor (see the variant).
        factor: f64,
    },
    /// PyTorch's SequentialLR: each schedule in turn, from its own step 0.
    Sequential {
        /// Updates at which the rate changes (or the next schedule starts).
        milestones: Vec<u64>,
        /// The child schedules.
        schedules: Vec<Kind>,
    },
    /// PyTorch's ChainedScheduler: the product of the schedules.
    Chained {
        /// The child schedules.
        schedules: Vec<Kind>,
    },
    /// PyTorch's ReduceLROnPlateau, watching the observed metric.
    ReduceOnPlateau {
        #[serde(default = "default_plateau_mode")]
        /// The variant's mode.
        mode: PlateauMode,
        #[serde(default = "tenth")]
        /// The factor (see the variant).
        factor: f64,
        #[serde(default = "default_patience")]
        /// Updates without improvement tolerated.
        patience: u64,
        #[serde(default = "default_threshold")]
        /// Improvement that counts.
        threshold: f64,
        #[serde(default = "default_threshold_mode")]
        /// "rel" or "abs".
        threshold_mode: ThresholdMode,
        #[serde(default)]
        /// Updates after a reduction that are not counted.
        cooldown: u64,
        #[serde(default)]
        /// The lowest rate.
        min_lr: f64,
        #[serde(default = "default_eps")]
        /// Reductions smaller than this are skipped.
        eps: f64,
    },
    /// lr/(1 + γt).
    InverseTime {
        /// The decay factor γ.
        gamma: f64,
    },
    /// lr/√(1 + γt).
    InverseSqrt {
        /// The decay factor γ.
        gamma: f64,
    },
    /// Keras's ExponentialDecay: lr·rate^(t/steps), or ^⌊t/steps⌋.
    ExponentialDecay {
        /// Factor per decay_steps updates.
        decay_rate: f64,
        /// Updates per factor of decay_rate.
        decay_steps: u64,
        #[serde(default)]
        /// Decay in whole steps.
        staircase: bool,
    },
    /// Keras's PiecewiseConstantDecay.
    PiecewiseConstant {
        /// Updates after which the next value applies.
        boundaries: Vec<u64>,
        /// The rates.
        values: Vec<f64>,
    },
    /// lr·(1 − αt), never below end_lr.
    LinearDecay {
        /// Fraction of the base rate lost per update.
        alpha: f64,
        #[serde(default)]
        /// The floor.
        end_lr: f64,
    },
    /// Linear warmup from start_factor over `steps` updates, then `then` from its own step 0.
    Warmup {
        /// Warmup updates.
        steps: u64,
        #[serde(default = "third")]
        /// Factor at update 0.
        start_factor: f64,
        /// The schedule after warmup.
        then: Box<Kind>,
    },
    /// ×factor the first time the loss falls below each threshold.
    LossMilestones {
        /// Loss thresholds.
        thresholds: Vec<f64>,
        #[serde(default = "half")]
        /// The factor (see the variant).
        factor: f64,
    },
    /// The loss rose: ×decrease; it fell: ×increase; within [min_lr, max_lr].
    BoldDriver {
        #[serde(default = "half")]
        /// Factor when the loss rose.
        decrease: f64,
        #[serde(default = "default_increase")]
        /// Factor when the loss fell.
        increase: f64,
        #[serde(default)]
        /// The lowest rate.
        min_lr: f64,
        #[serde(default = "infinity", with = "crate::float")]
        /// The highest rate.
        max_lr: f64,
    },
    /// lr/√(1 + β·Σ‖g‖²) (AdaGrad-Norm).
    GradNormAdaptive {
        /// The weight β.
        beta: f64,
    },
    /// lr/(1 + β·loss).
    LossAdaptive {
        /// The weight β.
        beta: f64,
    },
}

fn default_step_size_up() -> u64 {
    2000
}
fn default_cyclic_mode() -> CyclicMode {
    CyclicMode::Triangular
}
fn default_pct_start() -> f64 {
    0.3
}
fn default_anneal() -> AnnealStrategy {
    AnnealStrategy::Cos
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}
fn default_plateau_mode() -> PlateauMode {
    PlateauMode::Min
}
fn default_patience() -> u64 {
    10
}
fn default_threshold() -> f64 {
    1e-4
}
fn default_threshold_mode() -> ThresholdMode {
    ThresholdMode::Rel
}
fn default_eps() -> f64 {
    1e-8
}
fn default_increase() -> f64 {
    1.05
}

/// When a schedule steps: its counters count updates or epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// After every update (`scheduler.step()` inside the batch loop).
    #[default]
    Update,
    /// Once per epoch, after its last update and its evaluation (`scheduler.step()` at the end
    /// of PyTorch's epoch loop): the rate holds for a whole epoch.
    Epoch,
}

impl Interval {
    /// The run-file name.
    pub fn name(self) -> &'static str {
        match self {
            Interval::Update => "update",
            Interval::Epoch => "epoch",
        }
    }
}

/// What an observation-driven schedule watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Each update's batch loss (interval "update").
    #[default]
    Loss,
    /// The epoch's mean batch loss.
    TrainLoss,
    /// The loss over the validation rows after the epoch's last update.
    ValLoss,
    /// The fraction of validation rows classified right after the epoch's last update.
    ValAccuracy,
}

impl Monitor {
    /// The run-file name.
    pub fn name(self) -> &'static str {
        match self {
            Monitor::Loss => "loss",
            Monitor::TrainLoss => "train_loss",
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
        }
    }

    /// Whether it is measured once per epoch (all but `loss`).
    pub fn per_epoch(self) -> bool {
        self != Monitor::Loss
    }

    /// Whether it needs a validation set.
    pub fn needs_validation(self) -> bool {
        matches!(self, Monitor::ValLoss | Monitor::ValAccuracy)
    }
}

/// A `[schedule]` table: the base rate (optional), when the schedule steps, what an
/// observation-driven schedule watches, and the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// The base rate, if the table gives one.
    pub lr: Option<f64>,
    /// `interval`: per update (default) or per epoch.
    pub interval: Interval,
    /// `monitor`: the metric an observation-driven schedule watches (default: each update's
    /// loss with interval "update"; must be given with interval "epoch").
    pub monitor: Option<Monitor>,
    /// The schedule.
    pub kind: Kind,
}

impl ScheduleConfig {
    /// Parses the keys of a `[schedule]` table (not the table header itself).
    pub fn from_toml(text: &str) -> Result<Self> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ScheduleError::new("toml", e.to_string()))?;
        Self::from_table(table)
    }

    /// From an already-parsed `[schedule]` table (a run file's).
    pub fn from_table(mut table: toml::Table) -> Result<Self> {
        let lr = match table.remove("lr") {
            None => None,
            Some(toml::Value::Float(f)) => Some(f),
            Some(toml::Value::Integer(i)) => Some(i as f64),
            Some(other) => {
                return Err(ScheduleError::new(
                    "lr",
                    format!("must be a number, got {other}"),
                ));
            }
        };
        let interval = match table.remove("interval") {
            None => Interval::default(),
            Some(v) => Interval::deserialize(v.clone()).map_err(|_| {
                ScheduleError::new(
                    "interval",
                    format!("expected \"update\" or \"epoch\", got {v}"),
                )
            })?,
        };
        let monitor = match table.remove("monitor") {
            None => None,
            Some(v) => Some(Monitor::deserialize(v.clone()).map_err(|_| {
                ScheduleError::new(
                    "monitor",
                    format!(
                        "expected \"loss\", \"train_loss\", \"val_loss\" or \"val_accuracy\", got {v}"
                    ),
                )
            })?),
        };
        if !table.contains_key("kind") {
            return Err(ScheduleError::new(
                "kind",
                "missing: name the schedule, e.g. kind = \"cosine_annealing\"",
            ));
        }
        let kind = Kind::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            let field = culprit(&table).unwrap_or_else(|| "kind".into());
            ScheduleError::new(field, first_line(&e.to_string()))
        })?;
        let config = ScheduleConfig {
            lr,
            interval,
            monitor,
            kind,
        };
        config.check_monitor()?;
        Ok(config)
    }

    /// The metric the schedule watches, if it watches one.
    pub fn watched(&self) -> Option<Monitor> {
        let needs = self.kind.build().ok()?.needs();
        needs.loss.then(|| self.monitor.unwrap_or_default())
    }

    /// `interval` and `monitor` fit each other and the schedule.
    fn check_monitor(&self) -> Result<()> {
        let needs = self.kind.build()?.needs();
        let name = self.kind.name();
        if let Some(m) = self.monitor
            && !needs.loss
        {
            return Err(ScheduleError::new(
                "monitor",
                format!(
                    "{name} does not watch a metric, so monitor = \"{}\" has nothing to steer",
                    m.name()
                ),
            ));
        }
        if self.interval == Interval::Epoch && needs.grad_norm {
            return Err(ScheduleError::new(
                "interval",
                format!("{name} reads each update's gradient norm: it needs interval = \"update\""),
            ));
        }
        let monitor = self.monitor.unwrap_or_default();
        match (self.interval, monitor.per_epoch()) {
            (Interval::Update, true) => {
                return Err(ScheduleError::new(
                    "monitor",
                    format!(
                        "\"{}\" is measured once per epoch: it needs interval = \"epoch\"",
                        monitor.name()
                    ),
                ));
            }
            (Interval::Epoch, false) if needs.loss => {
                return Err(ScheduleError::new(
                    "monitor",
                    format!(
                        "with interval = \"epoch\", {name} watches an epoch's metric: give monitor = \"train_loss\", \"val_loss\" or \"val_accuracy\""
                    ),
                ));
            }
            _ => {}
        }
        if needs.loss && monitor == Monitor::ValAccuracy {
            match &self.kind {
                Kind::ReduceOnPlateau {
                    mode: PlateauMode::Max,
                    ..
                } => {}
                Kind::ReduceOnPlateau { .. } => {
                    return Err(ScheduleError::new(
                        "mode",
                        "val_accuracy rises as the model improves: use mode = \"max\"",
                    ));
                }
                _ => {
                    return Err(ScheduleError::new(
                        "monitor",
                        format!(
                            "{name} treats what it watches as a loss (lower is better): monitor train_loss or val_loss, or use reduce_on_plateau with mode = \"max\""
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds the scheduler. `default_lr` is used when the table has no `lr` (a run file's
    /// `[optimizer].lr`).
    pub fn build(&self, default_lr: Option<f64>) -> Result<Scheduler> {
        let schedule = self.kind.build()?;
        let lr = match self.lr.or(default_lr) {
            Some(lr) => {
                non_negative("lr", lr)?;
                lr
            }
            None if schedule.uses_base_lr() => {
                return Err(ScheduleError::new(
                    "lr",
                    "missing: the base rate (in a run file it defaults to [optimizer].lr)",
                ));
            }
            None => 0.0,
        };
        Scheduler::new(lr, schedule)
    }
}

/// The key of a `[schedule]` table that makes it fail to parse (a dotted path inside
/// composites: `then.step_size`, `schedules[1].t_max`). serde's errors for a tagged enum do not
/// say; a key is at fault if the table parses without it, or then misses only it.
fn culprit(table: &toml::Table) -> Option<String> {
    let parses = |t: &toml::Table| Kind::deserialize(toml::Value::Table(t.clone()));
    let error = parses(table).err()?.to_string();
    for (key, value) in table.iter().filter(|(k, _)| *k != "kind") {
        if error.contains(&format!("unknown field `{key}`")) {
            return Some(key.clone());
        }
        let mut without = table.clone();
        without.remove(key);
        let at_fault = match parses(&without) {
            Ok(_) => true,
            Err(e) => e.to_string().contains(&format!("missing field `{key}`")),
        };
        if !at_fault {
            continue;
        }
        // Into a child schedule only (under a composite's keys, or a table with a `kind`): a
        // table given where a number belongs is itself the fault.
        let holds_schedules = key == "then" || key == "schedules";
        let schedule = |v: &toml::Value| {
            v.as_table()
                .filter(|t| holds_schedules || t.contains_key("kind"))
                .cloned()
        };
        let inner = match value {
            toml::Value::Table(_) => schedule(value)
                .and_then(|t| culprit(&t))
                .map(|c| format!("{key}.{c}")),
            toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
                let t = schedule(v)?;
                let t = &t;
                parses(t).is_err().then(|| match culprit(t) {
                    Some(c) => format!("{key}[{i}].{c}"),
                    None => format!("{key}[{i}]"),
                })
            }),
            _ => None,
        };
        return Some(inner.unwrap_or_else(|| key.clone()));
    }
    // No key given is at fault: one is missing here.
    error
        .split("missing field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
}

/// A deserialisation error's first line (toml adds the key's position on further lines).
fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

impl Kind {
    /// The snake_case name used as `kind`.
    pub fn name(&self) -> String {
        toml::Value::try_from(self)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// Checks the settings and builds the schedule.
    pub fn build(&self) -> Result<Schedule> {
        use Kind as K;
        let children = |schedules: &[Kind]| {
            schedules
                .iter()
                .enumerate()
                .map(|(i, k)| k.build().map_err(|e| e.within(&format!("schedules[{i}]"))))
                .collect::<Result<Vec<_>>>()
        };
        Ok(match self {
            K::Fixed {} => Schedule::Fixed(Epochal::new(Fixed)),
            K::Constant {
                factor,
                total_iters,
            } => Schedule::Constant(Epochal::new(ConstantLr::new(*factor, *total_iters)?)),
            K::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => Schedule::Linear(Epochal::new(LinearLr::new(
                *start_factor,
                *end_factor,
                *total_iters,
            )?)),
            K::Step { step_size, gamma } => {
                Schedule::Step(Epochal::new(StepLr::new(*step_size, *gamma)?))
            }
            K::MultiStep { milestones, gamma } => {
                Schedule::MultiStep(Epochal::new(MultiStepLr::new(milestones.clone(), *gamma)?))
            }
            K::Exponential { gamma } => {
                Schedule::Exponential(Epochal::new(ExponentialLr::new(*gamma)?))
            }
            K::Polynomial { total_iters, power } => {
                Schedule::Polynomial(Epochal::new(PolynomialLr::new(*total_iters, *power)?))
            }
            K::CosineAnnealing { t_max, eta_min } => {
                Schedule::CosineAnnealing(Epochal::new(CosineAnnealingLr::new(*t_max, *eta_min)?))
            }
            K::CosineAnnealingWarmRestarts {
                t_0,
                t_mult,
                eta_min,
            } => Schedule::CosineAnnealingWarmRestarts(CosineAnnealingWarmRestarts::new(
                *t_0, *t_mult, *eta_min,
            )?),
            K::Cyclic {
                base_lr,
                max_lr,
                step_size_up,
                step_size_down,
                mode,
                gamma,
                cycle_momentum,
                base_momentum,
                max_momentum,
            } => Schedule::Cyclic(Epochal::new(
                CyclicLr::new(
                    *base_lr,
                    *max_lr,
                    *step_size_up,
                    *step_size_down,
                    *mode,
                    *gamma,
                )?
                .cycle_momentum(momentum_cycle(
                    *cycle_momentum,
                    *base_momentum,
                    *max_momentum,
                )?),
            )),
            K::OneCycle {
                max_lr,
                total_steps,
                epochs,
                steps_per_epoch,
                pct_start,
                anneal_strategy,
                div_factor,
                final_div_factor,
                three_phase,
                cycle_momentum,
                base_momentum,
                max_momentum,
            } => Schedule::OneCycle(Epochal::new(
                OneCycleLr::new(
                    *max_lr,
                    one_cycle_steps(*total_steps, *epochs, *steps_per_epoch)?,
                    *pct_start,
                    *anneal_strategy,
                    *div_factor,
                    *final_div_factor,
                    *three_phase,
                )?
                .cycle_momentum(momentum_cycle(
                    *cycle_momentum,
                    *base_momentum,
                    *max_momentum,
                )?),
            )),
            K::Multiplicative { factor } => {
                Schedule::Multiplicative(Epochal::new(MultiplicativeLr::new(*factor)?))
            }
            K::Sequential {
                milestones,
                schedules,
            } => Schedule::Sequential(SequentialLr::new(children(schedules)?, milestones.clone())?),
            K::Chained { schedules } => {
                Schedule::Chained(ChainedScheduler::new(children(schedules)?)?)
            }
            K::ReduceOnPlateau {
                mode,
                factor,
                patience,
                threshold,
                threshold_mode,
                cooldown,
                min_lr,
                eps,
            } => Schedule::ReduceOnPlateau(ReduceLrOnPlateau::new(
                *mode,
                *factor,
                *patience,
                *threshold,
                *threshold_mode,
                *cooldown,
                *min_lr,
                *eps,
            )?),
            K::InverseTime { gamma } => {
                Schedule::InverseTime(Factored::new(InverseTime::new(*gamma)?))
            }
            K::InverseSqrt { gamma } => {
                Schedule::InverseSqrt(Factored::new(InverseSqrt::new(*gamma)?))
            }
            K::ExponentialDecay {
                decay_rate,
                decay_steps,
                staircase,
            } => Schedule::ExponentialDecay(Factored::new(ExponentialDecay::new(
                *decay_rate,
                *decay_steps,
                *staircase,
            )?)),
            K::PiecewiseConstant { boundaries, values } => Schedule::PiecewiseConstant(
                Factored::new(PiecewiseConstant::new(boundaries.clone(), values.clone())?),
            ),
            K::LinearDecay { alpha, end_lr } => {
                Schedule::LinearDecay(Factored::new(LinearDecay::new(*alpha, *end_lr)?))
            }
            // Linear warmup from start_factor to 1 over `steps` updates, then the inner
            // schedule from its own step 0: SequentialLR([LinearLR, then], [steps]).
            K::Warmup {
                steps,
                start_factor,
                then,
            } => {
                if *steps == 0 {
                    return Err(ScheduleError::new("steps", "must be at least 1"));
                }
                // Warmup's own keys: LinearLR's start_factor, and its total_iters as steps.
                let warm = Schedule::Linear(Epochal::new(
                    LinearLr::new(*start_factor, 1.0, *steps).map_err(|e| {
                        match e.field.as_str() {
                            "total_iters" => ScheduleError::new("steps", e.reason),
                            _ => e,
                        }
                    })?,
                ));
                let inner = then.build().map_err(|e| e.within("then"))?;
                if inner.is_composite() {
                    return Err(ScheduleError::new(
                        "then",
                        "cannot be sequential or chained (it restarts at the end of warmup)",
                    ));
                }
                // The sequential is warmup's own making: what it refuses is `then`.
                Schedule::Sequential(
                    SequentialLr::new(vec![warm, inner], vec![*steps])
                        .map_err(|e| ScheduleError::new("then", e.reason))?,
                )
            }
            K::LossMilestones { thresholds, factor } => Schedule::LossMilestones(Factored::new(
                LossMilestones::new(thresholds.clone(), *factor)?,
            )),
            K::BoldDriver {
                decrease,
                increase,
                min_lr,
                max_lr,
            } => Schedule::BoldDriver(Factored::new(BoldDriver::new(
                *decrease, *increase, *min_lr, *max_lr,
            )?)),
            K::GradNormAdaptive { beta } => {
                Schedule::GradNormAdaptive(Factored::new(GradNormAdaptive::new(*beta)?))
            }
            K::LossAdaptive { beta } => {
                Schedule::LossAdaptive(Factored::new(LossAdaptive::new(*beta)?))
            }
        })
    }
}
