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
use crate::{Result, Schedule, ScheduleError, Scheduler, non_negative};

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

/// One schedule's settings, without the base rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    Fixed {},
    Constant {
        #[serde(default = "third")]
        factor: f64,
        #[serde(default = "five")]
        total_iters: u64,
    },
    Linear {
        #[serde(default = "third")]
        start_factor: f64,
        #[serde(default = "one")]
        end_factor: f64,
        #[serde(default = "five")]
        total_iters: u64,
    },
    Step {
        step_size: u64,
        #[serde(default = "tenth")]
        gamma: f64,
    },
    MultiStep {
        milestones: Vec<u64>,
        #[serde(default = "tenth")]
        gamma: f64,
    },
    Exponential {
        gamma: f64,
    },
    Polynomial {
        #[serde(default = "five")]
        total_iters: u64,
        #[serde(default = "one")]
        power: f64,
    },
    CosineAnnealing {
        t_max: u64,
        #[serde(default)]
        eta_min: f64,
    },
    CosineAnnealingWarmRestarts {
        t_0: u64,
        #[serde(default = "u1")]
        t_mult: u64,
        #[serde(default)]
        eta_min: f64,
    },
    Cyclic {
        base_lr: f64,
        max_lr: f64,
        #[serde(default = "default_step_size_up")]
        step_size_up: u64,
        #[serde(default)]
        step_size_down: Option<u64>,
        #[serde(default = "default_cyclic_mode")]
        mode: CyclicMode,
        #[serde(default = "one")]
        gamma: f64,
    },
    OneCycle {
        max_lr: f64,
        total_steps: u64,
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        #[serde(default = "default_anneal")]
        anneal_strategy: AnnealStrategy,
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        #[serde(default)]
        three_phase: bool,
    },
    Multiplicative {
        factor: f64,
    },
    Sequential {
        milestones: Vec<u64>,
        schedules: Vec<Kind>,
    },
    Chained {
        schedules: Vec<Kind>,
    },
    ReduceOnPlateau {
        #[serde(default = "default_plateau_mode")]
        mode: PlateauMode,
        #[serde(default = "tenth")]
        factor: f64,
        #[serde(default = "default_patience")]
        patience: u64,
        #[serde(default = "default_threshold")]
        threshold: f64,
        #[serde(default = "default_threshold_mode")]
        threshold_mode: ThresholdMode,
        #[serde(default)]
        cooldown: u64,
        #[serde(default)]
        min_lr: f64,
        #[serde(default = "default_eps")]
        eps: f64,
    },
    InverseTime {
        gamma: f64,
    },
    InverseSqrt {
        gamma: f64,
    },
    ExponentialDecay {
        decay_rate: f64,
        decay_steps: u64,
        #[serde(default)]
        staircase: bool,
    },
    PiecewiseConstant {
        boundaries: Vec<u64>,
        values: Vec<f64>,
    },
    LinearDecay {
        alpha: f64,
        #[serde(default)]
        end_lr: f64,
    },
    Warmup {
        steps: u64,
        #[serde(default = "third")]
        start_factor: f64,
        then: Box<Kind>,
    },
    LossMilestones {
        thresholds: Vec<f64>,
        #[serde(default = "half")]
        factor: f64,
    },
    BoldDriver {
        #[serde(default = "half")]
        decrease: f64,
        #[serde(default = "default_increase")]
        increase: f64,
        #[serde(default)]
        min_lr: f64,
        #[serde(default = "infinity", with = "crate::float")]
        max_lr: f64,
    },
    GradNormAdaptive {
        beta: f64,
    },
    LossAdaptive {
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

/// A `[schedule]` table: the base rate (optional) and the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub lr: Option<f64>,
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
        if !table.contains_key("kind") {
            return Err(ScheduleError::new(
                "kind",
                "missing: name the schedule, e.g. kind = \"cosine_annealing\"",
            ));
        }
        let kind = Kind::deserialize(toml::Value::Table(table))
            .map_err(|e| ScheduleError::new("kind", e.to_string().trim_end().to_string()))?;
        Ok(ScheduleConfig { lr, kind })
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
            } => Schedule::Cyclic(Epochal::new(CyclicLr::new(
                *base_lr,
                *max_lr,
                *step_size_up,
                *step_size_down,
                *mode,
                *gamma,
            )?)),
            K::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                anneal_strategy,
                div_factor,
                final_div_factor,
                three_phase,
            } => Schedule::OneCycle(Epochal::new(OneCycleLr::new(
                *max_lr,
                *total_steps,
                *pct_start,
                *anneal_strategy,
                *div_factor,
                *final_div_factor,
                *three_phase,
            )?)),
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
                let warm = Schedule::Linear(Epochal::new(
                    LinearLr::new(*start_factor, 1.0, *steps).map_err(|e| e.within("warmup"))?,
                ));
                let inner = then.build().map_err(|e| e.within("then"))?;
                if inner.is_composite() {
                    return Err(ScheduleError::new(
                        "then",
                        "cannot be sequential or chained (it restarts at the end of warmup)",
                    ));
                }
                Schedule::Sequential(
                    SequentialLr::new(vec![warm, inner], vec![*steps])
                        .map_err(|e| e.within("then"))?,
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
