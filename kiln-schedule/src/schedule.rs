//! Every built-in schedule in one type, so a whole schedule — composites included — is built
//! from a config, stepped, and its state saved and restored with serde.

use serde::{Deserialize, Serialize};

use crate::chained::ChainedScheduler;
use crate::constant::ConstantLr;
use crate::cosine_annealing::CosineAnnealingLr;
use crate::cosine_annealing_warm_restarts::CosineAnnealingWarmRestarts;
use crate::cyclic::CyclicLr;
use crate::epochal::Epochal;
use crate::exponential::ExponentialLr;
use crate::exponential_decay::ExponentialDecay;
use crate::factor::Factored;
use crate::fixed::Fixed;
use crate::inverse_sqrt::InverseSqrt;
use crate::inverse_time::InverseTime;
use crate::lambda::LambdaLr;
use crate::linear::LinearLr;
use crate::linear_decay::LinearDecay;
use crate::multi_step::MultiStepLr;
use crate::multiplicative::MultiplicativeLr;
use crate::observed::{BoldDriver, GradNormAdaptive, LossAdaptive, LossMilestones};
use crate::one_cycle::OneCycleLr;
use crate::piecewise_constant::PiecewiseConstant;
use crate::polynomial::PolynomialLr;
use crate::reduce_on_plateau::ReduceLrOnPlateau;
use crate::sequential::SequentialLr;
use crate::step::StepLr;
use crate::{Group, LrSchedule, Needs, Observation, Result};

/// A learning-rate schedule with its state. Build one from a config ([`crate::ScheduleConfig`])
/// or from the constructors below; drive it with [`crate::Scheduler`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// See [`crate::fixed`].
    Fixed(Epochal<Fixed>),
    /// See [`crate::constant`].
    Constant(Epochal<ConstantLr>),
    /// See [`crate::linear`].
    Linear(Epochal<LinearLr>),
    /// See [`crate::step`].
    Step(Epochal<StepLr>),
    /// See [`crate::multi_step`].
    MultiStep(Epochal<MultiStepLr>),
    /// See [`crate::exponential`].
    Exponential(Epochal<ExponentialLr>),
    /// See [`crate::polynomial`].
    Polynomial(Epochal<PolynomialLr>),
    /// See [`crate::cosine_annealing`].
    CosineAnnealing(Epochal<CosineAnnealingLr>),
    /// See [`crate::cosine_annealing_warm_restarts`].
    CosineAnnealingWarmRestarts(CosineAnnealingWarmRestarts),
    /// See [`crate::cyclic`].
    Cyclic(Epochal<CyclicLr>),
    /// See [`crate::one_cycle`].
    OneCycle(Epochal<OneCycleLr>),
    /// See [`crate::multiplicative`].
    Multiplicative(Epochal<MultiplicativeLr>),
    /// See [`crate::sequential`].
    Sequential(SequentialLr),
    /// See [`crate::chained`].
    Chained(ChainedScheduler),
    /// See [`crate::reduce_on_plateau`].
    ReduceOnPlateau(ReduceLrOnPlateau),
    /// See [`crate::inverse_time`].
    InverseTime(Factored<InverseTime>),
    /// See [`crate::inverse_sqrt`].
    InverseSqrt(Factored<InverseSqrt>),
    /// See [`crate::exponential_decay`].
    ExponentialDecay(Factored<ExponentialDecay>),
    /// See [`crate::piecewise_constant`].
    PiecewiseConstant(Factored<PiecewiseConstant>),
    /// See [`crate::linear_decay`].
    LinearDecay(Factored<LinearDecay>),
    /// See [`crate::observed::LossMilestones`].
    LossMilestones(Factored<LossMilestones>),
    /// See [`crate::observed::BoldDriver`].
    BoldDriver(Factored<BoldDriver>),
    /// See [`crate::observed::GradNormAdaptive`].
    GradNormAdaptive(Factored<GradNormAdaptive>),
    /// See [`crate::observed::LossAdaptive`].
    LossAdaptive(Factored<LossAdaptive>),
    /// lr·f(t) from a Rust closure. Its state cannot be saved.
    #[serde(skip)]
    Lambda(Epochal<LambdaLr>),
    /// Any user type implementing [`LrSchedule`]. Its state cannot be saved.
    #[serde(skip)]
    Custom(Box<dyn LrSchedule>),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Schedule::Fixed($s) => $e,
            Schedule::Constant($s) => $e,
            Schedule::Linear($s) => $e,
            Schedule::Step($s) => $e,
            Schedule::MultiStep($s) => $e,
            Schedule::Exponential($s) => $e,
            Schedule::Polynomial($s) => $e,
            Schedule::CosineAnnealing($s) => $e,
            Schedule::CosineAnnealingWarmRestarts($s) => $e,
            Schedule::Cyclic($s) => $e,
            Schedule::OneCycle($s) => $e,
            Schedule::Multiplicative($s) => $e,
            Schedule::Sequential($s) => $e,
            Schedule::Chained($s) => $e,
            Schedule::ReduceOnPlateau($s) => $e,
            Schedule::InverseTime($s) => $e,
            Schedule::InverseSqrt($s) => $e,
            Schedule::ExponentialDecay($s) => $e,
            Schedule::PiecewiseConstant($s) => $e,
            Schedule::LinearDecay($s) => $e,
            Schedule::LossMilestones($s) => $e,
            Schedule::BoldDriver($s) => $e,
            Schedule::GradNormAdaptive($s) => $e,
            Schedule::LossAdaptive($s) => $e,
            Schedule::Lambda($s) => $e,
            Schedule::Custom($s) => $e,
        }
    };
}

impl LrSchedule for Schedule {
    fn construct(&mut self, group: &mut Group) -> Result<()> {
        each!(self, s => s.construct(group))
    }
    fn step(&mut self, group: &mut Group, observation: &Observation) -> Result<()> {
        each!(self, s => s.step(group, observation))
    }
    fn initial_step(&mut self, group: &mut Group) -> Result<()> {
        each!(self, s => s.initial_step(group))
    }
    fn restart(&mut self, group: &mut Group) -> Result<()> {
        each!(self, s => s.restart(group))
    }
    fn undo(&mut self) {
        each!(self, s => s.undo())
    }
    fn needs(&self) -> Needs {
        each!(self, s => s.needs())
    }
    fn check(&self) -> Result<()> {
        each!(self, s => s.check())
    }
}

/// Builds a composite's children in order on the same group (each taking its initial step, as
/// PyTorch's constructors do), naming the failing child.
pub(crate) fn construct_children(children: &mut [Schedule], group: &mut Group) -> Result<()> {
    for (i, s) in children.iter_mut().enumerate() {
        s.construct(group)
            .map_err(|e| e.within(&format!("schedules[{i}]")))?;
    }
    Ok(())
}

/// Checks every child of a restored composite, naming the failing one.
pub(crate) fn check_children(children: &[Schedule]) -> Result<()> {
    for (i, s) in children.iter().enumerate() {
        s.check()
            .map_err(|e| e.within(&format!("schedules[{i}]")))?;
    }
    Ok(())
}

/// Everything any child observes.
pub(crate) fn needs_of(children: &[Schedule]) -> Needs {
    children
        .iter()
        .fold(Needs::default(), |n, s| n.or(s.needs()))
}

impl Schedule {
    /// lr·f(t) from a closure, as PyTorch's LambdaLR.
    pub fn lambda(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Schedule {
        Schedule::Lambda(Epochal::new(LambdaLr::new(f)))
    }

    /// A user type implementing [`LrSchedule`].
    pub fn custom(s: impl LrSchedule + 'static) -> Schedule {
        Schedule::Custom(Box::new(s))
    }

    pub(crate) fn is_composite(&self) -> bool {
        matches!(self, Schedule::Sequential(_) | Schedule::Chained(_))
    }

    /// Whether the schedule reads the optimizer's base rate (one_cycle, cyclic and
    /// piecewise_constant set their own).
    pub fn uses_base_lr(&self) -> bool {
        match self {
            Schedule::OneCycle(_) | Schedule::Cyclic(_) | Schedule::PiecewiseConstant(_) => false,
            Schedule::Sequential(s) => s.schedules.iter().any(Schedule::uses_base_lr),
            Schedule::Chained(s) => s.schedules.iter().any(Schedule::uses_base_lr),
            _ => true,
        }
    }

    /// Whether a schedule inside cycles the optimizer's momentum (`cyclic` and `one_cycle`
    /// with `cycle_momentum`). User types are not known to: they set `Group::momentum` or not.
    pub fn cycles_momentum(&self) -> bool {
        match self {
            Schedule::Cyclic(s) => s.rule.momentum.is_some(),
            Schedule::OneCycle(s) => s.rule.momentum.is_some(),
            Schedule::Sequential(s) => s.schedules.iter().any(Schedule::cycles_momentum),
            Schedule::Chained(s) => s.schedules.iter().any(Schedule::cycles_momentum),
            _ => false,
        }
    }

    /// Whether the state can be saved (no closures or user types inside).
    pub fn can_save(&self) -> bool {
        match self {
            Schedule::Lambda(_) | Schedule::Custom(_) => false,
            Schedule::Sequential(s) => s.schedules.iter().all(Schedule::can_save),
            Schedule::Chained(s) => s.schedules.iter().all(Schedule::can_save),
            _ => true,
        }
    }
}
