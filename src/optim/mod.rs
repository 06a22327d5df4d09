//! Optimizers: torch.optim's update rules with PyTorch's names, arguments and defaults.
//!
//! An optimizer is one [`UpdateRule`]: its config (the struct, PyTorch's argument names), the
//! state tensors it keeps (PyTorch's state names, laid out like the parameter arena), the
//! scalars it computes on the host each update (in f64, as PyTorch's Python code does), its
//! CPU update and its GPU kernel (`shaders/optim/NAME.wgsl`). The trainer, the checkpoints and
//! the step programs only see this interface; adding an optimizer is its own file, its kernel
//! and one line in [`REGISTRY`].
//!
//! The host turns each update's scalars into a [`UpdateUniform`]: the GPU kernel reads it as
//! its uniform block and the CPU twin reads the very same words, so the two devices cannot
//! disagree about a scalar.

pub mod adadelta;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod asgd;
pub mod nadam;
pub mod radam;
pub mod rmsprop;
pub mod rprop;
pub mod sgd;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{KilnError, Result};
use crate::gpu::kernels::{Binding, Kernel};
use crate::model::ParamLayout;

pub use adadelta::Adadelta;
pub use adagrad::Adagrad;
pub use adam::Adam;
pub use adamax::Adamax;
pub use asgd::Asgd;
pub use nadam::NAdam;
pub use radam::RAdam;
pub use rmsprop::RmsProp;
pub use rprop::Rprop;
pub use sgd::Sgd;

/// The most state tensors one optimizer keeps (Adam with amsgrad, RMSprop centered with
/// momentum: three).
pub const MAX_STATE: usize = 3;

/// Words of optimizer-specific scalars in an [`UpdateUniform`].
pub const SCALAR_WORDS: usize = 12;

/// One per-parameter state tensor of an optimizer, laid out like the parameter arena.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateBlock {
    /// PyTorch's state name (`exp_avg`, `momentum_buffer`, …); checkpoints store the tensor
    /// as `NAME.layers.{i}.weight`.
    pub name: &'static str,
    /// Its value before the first update (PyTorch's: zeros, or Adagrad's
    /// `initial_accumulator_value`; Rprop's step sizes −1, unset until its first update
    /// sets them to the rate).
    pub init: f32,
    /// Whether this configuration uses it (Adam's `max_exp_avg_sq` only with amsgrad); an
    /// unused block keeps its binding in the kernel but holds nothing.
    pub used: bool,
    /// Whether every value is ≥ 0 by construction (second moments, sums of squares): a
    /// restored checkpoint must hold them so, or square roots of them turn into NaN.
    pub non_negative: bool,
    /// A momentum buffer that a schedule cycling the momentum needs, whatever the configured
    /// momentum (SGD's and RMSprop's, unused at momentum 0 otherwise).
    pub cycled: bool,
}

/// What a schedule sets for one update: PyTorch's `group['lr']` and, where the schedule
/// cycles it (`cyclic`, `one_cycle`), `group['momentum']` or `group['betas'][0]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    /// The learning rate.
    pub lr: f64,
    /// The momentum (SGD, RMSprop) or β1 (the Adam family) in place of the configured one.
    pub momentum: Option<f64>,
}

impl Hyper {
    /// The rate alone, every other value as configured.
    pub fn lr(lr: f64) -> Self {
        Hyper { lr, momentum: None }
    }
}

/// What a momentum-cycling schedule drives in an optimizer, as PyTorch's `CyclicLR` and
/// `OneCycleLR` choose it: `betas[0]` where the optimizer has betas, else `momentum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycledMomentum {
    /// SGD's and RMSprop's `momentum`: finite and ≥ 0.
    Momentum,
    /// The Adam family's β1: in [0, 1).
    Beta1,
}

impl CycledMomentum {
    /// The optimizer's argument, as PyTorch names it.
    pub fn name(self) -> &'static str {
        match self {
            CycledMomentum::Momentum => "momentum",
            CycledMomentum::Beta1 => "betas[0]",
        }
    }

    /// Why `v` cannot be this argument (the constructor's rule; PyTorch does not check the
    /// values its schedulers write, and a β1 of 1 would divide by zero).
    fn refuse(self, v: f64) -> Option<String> {
        let ok = match self {
            CycledMomentum::Momentum => v.is_finite() && v >= 0.0 && past_f32(v).is_none(),
            CycledMomentum::Beta1 => (0.0..1.0).contains(&v),
        };
        let range = match self {
            CycledMomentum::Momentum => "finite, >= 0 and within f32",
            CycledMomentum::Beta1 => "in [0, 1)",
        };
        (!ok).then(|| format!("{} must be {range}", self.name()))
    }
}

/// Scalar state kept on the host by name: PyTorch's `step` (the number of updates so far)
/// and, for NAdam, `mu_product`. Saved in checkpoints.
pub type Scalars = BTreeMap<String, f64>;

/// The uniform block of one update: the words every kernel reads, then the optimizer's own
/// scalars (its `#[repr(C)]` struct cast to words). Laid out as each kernel's WGSL struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct UpdateUniform {
    /// Parameters updated.
    pub len: u32,
    /// Loss-history slot that must hold a finite loss for the update to happen, or
    /// [`NO_SKIP`].
    pub skip_slot: u32,
    /// How many ranges of the no-decay list apply.
    pub no_decay_count: u32,
    /// Arena index of the first element bound: a kernel run on one chunk of an arena
    /// (`crate::gpu::arena`) compares `base + i` with the no-decay ranges, which are arena
    /// indices. 0 on the CPU device, which updates the whole arena at once.
    pub base: u32,
    /// The optimizer's scalars.
    pub scalars: [u32; SCALAR_WORDS],
}

/// [`UpdateUniform::skip_slot`] when no loss is checked.
pub const NO_SKIP: u32 = u32::MAX;

/// One torch.optim rule. See the module docs.
pub trait UpdateRule: std::fmt::Debug + Send + Sync {
    /// torch.optim's name, lower case (`"adamw"`).
    fn name(&self) -> &'static str;

    /// The checks PyTorch's constructor makes, with its rules; errors name `optimizer.FIELD`.
    fn validate(&self) -> Result<()>;

    /// The state tensors, in the kernel's binding order (at most [`MAX_STATE`]).
    fn state(&self) -> Vec<StateBlock>;

    /// Scalar state before the first update.
    fn initial_scalars(&self) -> Scalars {
        Scalars::from([("step".to_string(), 0.0)])
    }

    /// The scalars of the next update at the schedule's rate (and momentum, where it cycles
    /// one), advancing `scalars` as PyTorch's `step += 1` does, as the optimizer's part of the
    /// uniform block.
    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]>;

    /// What a schedule that cycles momentum drives here; `None` for an optimizer with neither
    /// a momentum nor betas (Adagrad), which such a schedule is refused for, as in PyTorch.
    fn cycled_momentum(&self) -> Option<CycledMomentum> {
        None
    }

    /// Why the first update cannot take the cycled momentum `momentum`, beyond the range
    /// [`CycledMomentum`] checks, if it cannot.
    fn refuse_first_momentum(&self, _momentum: f64) -> Option<String> {
        None
    }

    /// Whether weight decay is on (a no-decay mask then matters).
    fn weight_decay(&self) -> f64;

    /// The GPU kernel.
    fn kernel(&self) -> &'static Kernel;

    /// The CPU twin: updates `param` in place from `grad` with the scalars of
    /// [`UpdateRule::scalars`]; `decay` is false for elements that take no weight decay.
    /// `state` holds the used blocks' slices for these elements (empty slices for unused
    /// ones), in [`UpdateRule::state`] order.
    fn update_cpu(
        &self,
        scalars: &[u32; SCALAR_WORDS],
        decay: bool,
        param: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
    );
}

/// `torch.maximum(a, b)`: NaN when either is (`f32::max` would return the other).
/// (`maximum_pt` in update.wgsl.)
#[inline(always)]
pub(crate) fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// PyTorch's `torch.lerp(start, end, weight)` for a scalar weight, as its CPU kernel computes
/// it: the form that is exact at the end nearer to the weight. (`lerp_pt` in update.wgsl.)
#[inline(always)]
pub(crate) fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// The scalars [`Moments`] reads, as the first five words of every Adam-family uniform block
/// (the WGSL structs list them first too).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MomentScalars {
    decay_factor: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
}

impl MomentScalars {
    /// PyTorch's host arithmetic: AdamW's factor `1 − lr·weight_decay` in f64, the betas as
    /// the float32 scalars its tensor ops take.
    pub(crate) fn new(lr: f64, weight_decay: f64, [beta1, beta2]: [f64; 2]) -> Self {
        MomentScalars {
            decay_factor: (1.0 - lr * weight_decay) as f32,
            weight_decay: weight_decay as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
        }
    }

    /// The CPU twin's view for a span: `decay` false where biases take no weight decay.
    pub(crate) fn moments(&self, decay: bool, maximize: bool, decoupled: bool) -> Moments {
        let mut s = *self;
        if !decay {
            s.weight_decay = 0.0;
        }
        Moments {
            s,
            maximize,
            decoupled,
        }
    }
}

/// The first half of every Adam-family update (Adam/AdamW, NAdam, RAdam) in PyTorch's order:
/// maximize, weight decay (decoupled or L2), then both moments. The CPU twin of
/// `shaders/optim/moments.wgsl`.
pub(crate) struct Moments {
    /// Its `weight_decay` is 0 for elements that take no weight decay.
    s: MomentScalars,
    maximize: bool,
    decoupled: bool,
}

impl Moments {
    /// Updates `p` (decoupled decay), `m` and `v` in place; returns the gradient as used.
    #[inline(always)]
    pub(crate) fn apply(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) -> f32 {
        let s = &self.s;
        let g = if self.decoupled {
            if s.weight_decay != 0.0 {
                *p *= s.decay_factor;
            }
            if self.maximize { -g } else { g }
        } else {
            l2_grad(*p, g, s.weight_decay, self.maximize)
        };
        *m = lerp(*m, g, s.one_minus_beta1);
        *v = *v * s.beta2 + s.one_minus_beta2 * g * g;
        g
    }

    /// [`Moments::apply`] over whole slices, then `rest(p, g, m, v)` on each element with the
    /// gradient as used and the new moments: the loop every Adam-family twin runs. Zipped
    /// slices, no indexing, so the compiler can vectorise.
    #[inline(always)]
    pub(crate) fn for_each(
        &self,
        param: &mut [f32],
        grad: &[f32],
        exp_avg: &mut [f32],
        exp_avg_sq: &mut [f32],
        mut rest: impl FnMut(&mut f32, f32, f32, f32),
    ) {
        let pgmv = param
            .iter_mut()
            .zip(grad)
            .zip(exp_avg.iter_mut())
            .zip(exp_avg_sq.iter_mut());
        for (((p, &g), m), v) in pgmv {
            let g = self.apply(p, g, m, v);
            rest(p, g, *m, *v);
        }
    }
}

/// Checks an optimizer's scalar state restored from a checkpoint: `step` a whole number in
/// [0, 2^53], NAdam's `mu_product` in [0, 1] (a product of factors in [0, 1), kept in f32 as
/// PyTorch keeps it, so it underflows to 0 after a hundred or so updates); anything else
/// finite. A wrong value would divide by zero in the bias corrections.
pub(crate) fn check_scalars(scalars: &Scalars) -> Result<()> {
    for (name, &v) in scalars {
        let ok = match name.as_str() {
            "step" => v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64,
            "mu_product" => (0.0..=1.0).contains(&v),
            // ASGD's averaging weight 1/max(1, step − t0), and its step size.
            "mu" => v > 0.0 && v <= 1.0,
            "eta" => v.is_finite() && v >= 0.0,
            _ => v.is_finite(),
        };
        if !ok {
            return Err(KilnError::invalid(
                format!("checkpoint.optimizer.scalars.{name}"),
                format!("{v} is out of range (a damaged checkpoint?)"),
            ));
        }
    }
    Ok(())
}

/// The number PyTorch keeps in `state['step']` after this update: advances `scalars["step"]`.
pub(crate) fn next_step(scalars: &mut Scalars) -> Result<f64> {
    let step = scalar_mut(scalars, "step")?;
    *step += 1.0;
    Ok(*step)
}

/// The scalar state value `name` (`step`, NAdam's `mu_product`, ASGD's `eta` and `mu`).
pub(crate) fn scalar_mut<'a>(scalars: &'a mut Scalars, name: &str) -> Result<&'a mut f64> {
    scalars.get_mut(name).ok_or_else(|| {
        KilnError::invalid(
            "optimizer state",
            format!("the scalar state has no `{name}`"),
        )
    })
}

/// A validated optimizer: its rule, whether biases take weight decay, and whether a schedule
/// cycles its momentum.
#[derive(Clone, Debug)]
pub struct Optimizer {
    rule: Arc<dyn UpdateRule>,
    decay_biases: bool,
    momentum_cycled: bool,
}

impl Default for Optimizer {
    /// torch.optim.SGD's defaults.
    fn default() -> Self {
        Optimizer {
            rule: Arc::new(Sgd::default()),
            decay_biases: true,
            momentum_cycled: false,
        }
    }
}

impl Optimizer {
    /// Checks `rule` as PyTorch's constructor would.
    ///
    /// ```
    /// use kiln::optim::{Adam, Optimizer};
    /// let adamw = Optimizer::new(Adam::adamw())?.decay_biases(false);
    /// assert_eq!(adamw.name(), "adamw");
    /// assert!(Optimizer::new(Adam { betas: [1.5, 0.999], ..Adam::default() }).is_err());
    /// # Ok::<(), kiln::KilnError>(())
    /// ```
    pub fn new(rule: impl UpdateRule + 'static) -> Result<Self> {
        rule.validate()?;
        Ok(Optimizer {
            rule: Arc::new(rule),
            decay_biases: true,
            momentum_cycled: false,
        })
    }

    /// The optimizer under a schedule that sets its momentum (β1) every update
    /// ([`Hyper::momentum`]): momentum buffers are kept even where the configured momentum is
    /// 0. An optimizer without a momentum is refused, as PyTorch's `CyclicLR` and `OneCycleLR`
    /// refuse it.
    pub fn cycling_momentum(mut self) -> Result<Self> {
        if self.rule.cycled_momentum().is_none() {
            return Err(KilnError::invalid(
                "schedule.cycle_momentum",
                format!(
                    "{} has no momentum or betas for the schedule to cycle (PyTorch refuses \
                     it too); set cycle_momentum = false in the schedule's cyclic and \
                     one_cycle tables",
                    self.name()
                ),
            ));
        }
        self.momentum_cycled = true;
        Ok(self)
    }

    /// Why update `update` cannot use momentum (β1) `m`, if it cannot (a trainer refuses
    /// the update; `kiln schedule` the listing).
    pub fn refuse_momentum(&self, m: f64, update: u64) -> Option<String> {
        let why = match self.rule.cycled_momentum() {
            // Its buffers were sized when the trainer was built (a user schedule that starts
            // setting a momentum later would find none).
            Some(_) if !self.momentum_cycled => {
                "the schedule set no momentum when the trainer was built".into()
            }
            Some(c) => c
                .refuse(m)
                .or_else(|| self.rule.refuse_first_momentum(m).filter(|_| update == 0))?,
            None => "it has no momentum".into(),
        };
        Some(format!(
            "the momentum for update {update} is {m:?}, but {}: {why} (see the schedule's \
             base_momentum and max_momentum)",
            self.name()
        ))
    }

    /// The state tensors, in the kernel's binding order, with `used` as this optimizer needs
    /// them (a cycled momentum's buffer included).
    pub fn state_blocks(&self) -> Vec<StateBlock> {
        let mut blocks = self.rule.state();
        for b in &mut blocks {
            b.used |= b.cycled && self.momentum_cycled;
        }
        blocks
    }

    /// With `false`, biases take no weight decay (what PyTorch users do with a second
    /// parameter group whose `weight_decay` is 0).
    pub fn decay_biases(mut self, decay: bool) -> Self {
        self.decay_biases = decay;
        self
    }

    /// The rule.
    pub fn rule(&self) -> &dyn UpdateRule {
        &*self.rule
    }

    /// torch.optim's name.
    pub fn name(&self) -> &'static str {
        self.rule.name()
    }

    /// The state tensors this configuration keeps.
    pub fn used_state(&self) -> Vec<StateBlock> {
        self.state_blocks().into_iter().filter(|b| b.used).collect()
    }

    /// Element ranges of `layout` that take no weight decay: the biases, when they are
    /// excluded and weight decay is on.
    pub fn no_decay_ranges(&self, layout: &ParamLayout) -> Vec<[u32; 2]> {
        if self.decay_biases || self.rule.weight_decay() == 0.0 {
            return Vec::new();
        }
        layout
            .dense
            .iter()
            .map(|d| [d.bias as u32, (d.bias + d.fan_out) as u32])
            .collect()
    }
}

/// An optimizer's state outside a trainer, for one-off updates ([`crate::Device::update`]).
#[derive(Clone, Debug)]
pub struct State {
    /// Scalar state (`step`, …).
    pub scalars: Scalars,
    /// The state tensors in [`UpdateRule::state`] order; unused ones are empty.
    pub blocks: Vec<Vec<f32>>,
}

impl Optimizer {
    /// The state before the first update of `len` parameters.
    pub fn new_state(&self, len: usize) -> State {
        State {
            scalars: self.rule.initial_scalars(),
            blocks: self
                .state_blocks()
                .iter()
                .map(|b| {
                    if b.used {
                        vec![b.init; len]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        }
    }

    /// The uniform block of the next update of `len` parameters at rate `lr` (advancing
    /// `scalars`), with no non-finite check and weight decay everywhere.
    pub fn one_off_uniform(
        &self,
        lr: f64,
        len: usize,
        scalars: &mut Scalars,
    ) -> Result<UpdateUniform> {
        Ok(UpdateUniform {
            len: len as u32,
            skip_slot: NO_SKIP,
            no_decay_count: 0,
            base: 0,
            scalars: self.rule.scalars(Hyper::lr(lr), scalars)?,
        })
    }
}

/// One optimizer's entry: its run-file name, PyTorch's default learning rate, and how to read
/// its `[optimizer]` table.
pub struct Registration {
    /// The `kind` in a run file: torch.optim's class name in lower case.
    pub name: &'static str,
    /// PyTorch's default `lr` for it.
    pub default_lr: f64,
    /// Reads the table's other keys (PyTorch's argument names) into the rule; called with
    /// `name`, which its errors give.
    pub from_table: fn(&'static str, toml::Table) -> Result<Optimizer>,
}

/// Every optimizer Kiln has.
pub static REGISTRY: [Registration; 11] = [
    sgd::REGISTRATION,
    adam::REGISTRATION,
    adam::ADAMW_REGISTRATION,
    rmsprop::REGISTRATION,
    adagrad::REGISTRATION,
    nadam::REGISTRATION,
    radam::REGISTRATION,
    adamax::REGISTRATION,
    adadelta::REGISTRATION,
    rprop::REGISTRATION,
    asgd::REGISTRATION,
];

/// Every optimizer kernel, once each (Adam and AdamW share one), for the shader tests: each
/// registration's rule at its defaults names its kernel.
pub fn kernels() -> Vec<&'static Kernel> {
    let mut all: Vec<&'static Kernel> = Vec::new();
    for r in &REGISTRY {
        let kernel = (r.from_table)(r.name, toml::Table::new())
            .expect("the defaults are valid")
            .rule()
            .kernel();
        if !all.iter().any(|k| std::ptr::eq(*k, kernel)) {
            all.push(kernel);
        }
    }
    all
}

/// A run file's `[optimizer]` table, read: the optimizer and its base learning rate.
#[derive(Clone, Debug)]
pub struct OptimizerConfig {
    /// The optimizer.
    pub optimizer: Optimizer,
    /// The base learning rate (`lr`; PyTorch's default for the optimizer when absent).
    pub lr: f64,
}

impl OptimizerConfig {
    /// Reads `[optimizer]`: `kind` (default `"sgd"`), `lr`, `decay_biases` (default true) and
    /// the optimizer's own arguments with PyTorch's names. Errors name `optimizer.FIELD`.
    pub fn from_table(mut table: toml::Table) -> Result<Self> {
        let kind = match table.remove("kind") {
            None => "sgd".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(v) => {
                return Err(KilnError::invalid(
                    "optimizer.kind",
                    format!("expected a name such as \"adamw\", got {v}"),
                ));
            }
        };
        let registration = REGISTRY.iter().find(|r| r.name == kind).ok_or_else(|| {
            let names: Vec<_> = REGISTRY.iter().map(|r| r.name).collect();
            KilnError::invalid(
                "optimizer.kind",
                format!("unknown optimizer {kind:?}; Kiln has {}", names.join(", ")),
            )
        })?;
        let lr = match table.remove("lr") {
            None => registration.default_lr,
            Some(v) => number("optimizer.lr", &v)?,
        };
        check_non_negative("lr", lr)?;
        let decay_biases = match table.remove("decay_biases") {
            None => true,
            Some(toml::Value::Boolean(b)) => b,
            Some(v) => {
                return Err(KilnError::invalid(
                    "optimizer.decay_biases",
                    format!("expected true or false, got {v}"),
                ));
            }
        };
        let optimizer =
            (registration.from_table)(registration.name, table)?.decay_biases(decay_biases);
        Ok(OptimizerConfig { optimizer, lr })
    }
}

impl Default for OptimizerConfig {
    /// An absent `[optimizer]` table: torch.optim.SGD's defaults.
    fn default() -> Self {
        Self::from_table(toml::Table::new()).expect("the defaults are valid")
    }
}

fn number(field: &str, v: &toml::Value) -> Result<f64> {
    v.as_float()
        .or_else(|| v.as_integer().map(|i| i as f64))
        .ok_or_else(|| KilnError::invalid(field, format!("expected a number, got {v}")))
}

/// The gradient of the rules with L2 (coupled) weight decay, as PyTorch forms it: negated
/// for `maximize`, then `weight_decay * p` added (nothing added at zero, so a -0.0 stays).
/// The CPU twin of `l2_grad` in update.wgsl.
#[inline(always)]
pub(crate) fn l2_grad(p: f32, g: f32, weight_decay: f32, maximize: bool) -> f32 {
    let g = if maximize { -g } else { g };
    if weight_decay != 0.0 {
        g + weight_decay * p
    } else {
        g
    }
}

/// The `from_table` of a rule whose arguments are its fields.
fn read_rule<T: UpdateRule + serde::de::DeserializeOwned + 'static>(
    kind: &'static str,
    table: toml::Table,
) -> Result<Optimizer> {
    Optimizer::new(parse_args::<T>(kind, table)?)
}

/// Deserialises an optimizer's arguments from the rest of its table, naming the table in
/// errors (unknown keys included).
pub(crate) fn parse_args<T: serde::de::DeserializeOwned>(
    kind: &str,
    table: toml::Table,
) -> Result<T> {
    // The path names the key at fault (`optimizer.betas`).
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "optimizer".to_string()
        } else {
            format!("optimizer.{path}")
        };
        let message = e.into_inner().to_string();
        let first = message.lines().next().unwrap_or_default().trim_end();
        KilnError::invalid(field, format!("{kind}: {first}"))
    })
}

impl StateBlock {
    /// `values` as an update may take them: finite (an error naming `what`), and ≥ 0 where
    /// the block never holds a negative value (an error naming `field`, then `why` after the
    /// value).
    pub(crate) fn check_values(
        &self,
        values: &[f32],
        what: &str,
        field: &str,
        why: &str,
    ) -> Result<()> {
        crate::ops::check_finite(what, values)?;
        if self.non_negative
            && let Some(i) = values.iter().position(|&x| x < 0.0)
        {
            return Err(KilnError::invalid(
                field,
                format!(
                    "element {i} is {}, but `{}` never holds a negative value{why}",
                    values[i], self.name
                ),
            ));
        }
        Ok(())
    }
}

/// Why `v`, finite in f64, cannot be used by an update, which computes in f32 (where it would
/// be inf): "past f32's largest value …"; `None` if it can.
pub(crate) fn past_f32(v: f64) -> Option<String> {
    (v.abs() > f32::MAX as f64 && v.is_finite()).then(|| {
        format!(
            "past f32's largest value ({:e}), which updates compute in",
            f32::MAX
        )
    })
}

/// PyTorch's constructor check for a value that must be finite and ≥ 0.
pub(crate) fn check_non_negative(field: &str, v: f64) -> Result<()> {
    if let Some(why) = past_f32(v).filter(|_| v > 0.0) {
        Err(KilnError::invalid(
            format!("optimizer.{field}"),
            format!("{v:e} is {why}"),
        ))
    } else if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(KilnError::invalid(
            format!("optimizer.{field}"),
            format!("must be finite and >= 0, got {v}"),
        ))
    }
}

/// PyTorch's check of `betas`: each in [0, 1).
pub(crate) fn check_betas(betas: [f64; 2]) -> Result<()> {
    for (i, b) in betas.iter().enumerate() {
        if !(0.0..1.0).contains(b) {
            return Err(KilnError::invalid(
                "optimizer.betas",
                format!("betas[{i}] must be in [0, 1), got {b}"),
            ));
        }
    }
    Ok(())
}

/// Parameters per thread below which the CPU update runs on one thread: starting a thread
/// costs about as much as updating this many on one.
const PER_THREAD: usize = 1 << 17;

/// One contiguous piece of the arena with one decay flag: the parameters, their gradients and
/// the state blocks' matching slices (empty for unused blocks).
type Piece<'a> = (bool, &'a mut [f32], &'a [f32], Vec<&'a mut [f32]>);

/// The CPU update over the whole arena: split at the no-decay ranges, and over all cores
/// for large arenas. Every element gets the same arithmetic either way (bit-identical).
pub fn update_arena(
    rule: &dyn UpdateRule,
    scalars: &[u32; SCALAR_WORDS],
    no_decay: &[[u32; 2]],
    param: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<f32>],
) {
    let len = param.len();
    // Boundaries where the decay flag changes, in order.
    let mut spans = Vec::with_capacity(2 * no_decay.len() + 1);
    let mut at = 0;
    for &[s, e] in no_decay {
        let (s, e) = (s as usize, e as usize);
        if s > at {
            spans.push((at, s, true));
        }
        spans.push((s, e, false));
        at = e;
    }
    if at < len {
        spans.push((at, len, true));
    }
    // Asked once per process: on Linux the answer comes from reading cgroup files, and this
    // runs every update.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(len / PER_THREAD).max(1);
    let chunk = len.div_ceil(threads).max(1);
    let mut work: Vec<Vec<Piece<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    let mut param_rest = param;
    let mut state_rest: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
    for (s, e, decay) in spans {
        let mut from = s;
        while from < e {
            // Pieces never straddle two threads' chunks.
            let to = e.min((from / chunk + 1) * chunk);
            let (p, rest) = std::mem::take(&mut param_rest).split_at_mut(to - from);
            param_rest = rest;
            let st = state_rest
                .iter_mut()
                .map(|block| {
                    if block.is_empty() {
                        Default::default()
                    } else {
                        let (mine, rest) = std::mem::take(block).split_at_mut(to - from);
                        *block = rest;
                        mine
                    }
                })
                .collect();
            work[from / chunk].push((decay, p, &grad[from..to], st));
            from = to;
        }
    }
    let run = |pieces: Vec<Piece<'_>>| {
        for (decay, p, g, mut st) in pieces {
            rule.update_cpu(scalars, decay, p, g, &mut st);
        }
    };
    if threads == 1 {
        work.into_iter().for_each(run);
        return;
    }
    std::thread::scope(|scope| {
        for pieces in work {
            scope.spawn(|| run(pieces));
        }
    });
}

/// The bindings of an optimizer kernel with `states` state tensors: parameters, gradients,
/// loss history, no-decay ranges, the states, the uniform block.
pub(crate) const fn update_bindings(states: usize) -> &'static [Binding] {
    use Binding::{Read, ReadWrite, Uniform};
    match states {
        1 => &[ReadWrite, Read, Read, Read, ReadWrite, Uniform],
        2 => &[ReadWrite, Read, Read, Read, ReadWrite, ReadWrite, Uniform],
        _ => &[
            ReadWrite, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, Uniform,
        ],
    }
}

/// The kernel of `shaders/optim/FILE` with `shaders/update.wgsl` in front of it, and, for the
/// Adam family, `shaders/optim/moments.wgsl` between them.
macro_rules! update_kernel {
    ($file:literal, $entry:literal, $states:literal, moments) => {
        $crate::gpu::kernels::Kernel {
            file: concat!("optim/", $file),
            source: concat!(
                include_str!("../../shaders/update.wgsl"),
                include_str!("../../shaders/optim/moments.wgsl"),
                include_str!(concat!("../../shaders/optim/", $file))
            ),
            entry: $entry,
            group: 0,
            bindings: $crate::optim::update_bindings($states),
        }
    };
    ($file:literal, $entry:literal, $states:literal) => {
        $crate::gpu::kernels::Kernel {
            file: concat!("optim/", $file),
            source: concat!(
                include_str!("../../shaders/update.wgsl"),
                include_str!(concat!("../../shaders/optim/", $file))
            ),
            entry: $entry,
            group: 0,
            bindings: $crate::optim::update_bindings($states),
        }
    };
}
pub(crate) use update_kernel;

#[cfg(test)]
mod tests {
    use super::*;

    /// Split over threads and at no-decay ranges (one straddling the threads' boundary) or
    /// not, every element gets the same arithmetic: bit-identical, for every optimizer with
    /// weight decay on, and a length that does not divide evenly.
    #[test]
    fn the_split_update_equals_one_pass_per_span() {
        let n = 3 * PER_THREAD + 5;
        let grad: Vec<f32> = (0..n).map(|i| ((i % 101) as f32 - 50.0) * 1e-3).collect();
        let start: Vec<f32> = (0..n).map(|i| ((i % 37) as f32 - 18.0) * 1e-2).collect();
        let mid = n.div_ceil(2) as u32;
        let no_decay = [[5u32, 9], [mid - 3, mid + 4], [n as u32 - 2, n as u32]];
        for r in &REGISTRY {
            let mut table = toml::Table::new();
            table.insert("weight_decay".into(), toml::Value::Float(0.01));
            // Rprop has no weight decay.
            let optimizer = (r.from_table)(r.name, table)
                .or_else(|_| (r.from_table)(r.name, toml::Table::new()))
                .unwrap();
            let rule = optimizer.rule();
            let mut scalars = rule.initial_scalars();
            let mut state_a = optimizer.new_state(n).blocks;
            let mut state_b = state_a.clone();
            let (mut pa, mut pb) = (start.clone(), start.clone());
            for _ in 0..2 {
                let words = rule.scalars(Hyper::lr(0.1), &mut scalars).unwrap();
                update_arena(rule, &words, &no_decay, &mut pa, &grad, &mut state_a);
                // The reference: one call per span of equal decay, on one thread.
                let mut bounds = vec![(0, true)];
                for [s, e] in no_decay {
                    bounds.push((s as usize, false));
                    bounds.push((e as usize, true));
                }
                bounds.push((n, true));
                for w in bounds.windows(2) {
                    let ((from, decay), (to, _)) = (w[0], w[1]);
                    let mut st: Vec<&mut [f32]> = state_b
                        .iter_mut()
                        .map(|b| {
                            if b.is_empty() {
                                Default::default()
                            } else {
                                &mut b[from..to]
                            }
                        })
                        .collect();
                    rule.update_cpu(&words, decay, &mut pb[from..to], &grad[from..to], &mut st);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pa), bits(&pb), "{}", r.name);
            for (a, b) in state_a.iter().zip(&state_b) {
                assert_eq!(bits(a), bits(b), "{}", r.name);
            }
        }
    }

    /// The running maxima of Adamax and AMSGrad keep a NaN, as `torch.maximum` does
    /// (`f32::max` would drop it).
    #[test]
    fn running_maxima_keep_nan_as_pytorch() {
        for (text, block) in [("kind = 'adamax'", 1), ("kind = 'adam'\namsgrad = true", 2)] {
            let optimizer = OptimizerConfig::from_table(toml::from_str(text).unwrap())
                .unwrap()
                .optimizer;
            let rule = optimizer.rule();
            let mut state = optimizer.new_state(2);
            let mut scalars = rule.initial_scalars();
            let mut param = [0.5f32, 0.5];
            for grad in [[0.1f32, f32::NAN], [0.1, 0.2]] {
                let words = rule.scalars(Hyper::lr(0.1), &mut scalars).unwrap();
                let mut st: Vec<&mut [f32]> =
                    state.blocks.iter_mut().map(|b| b.as_mut_slice()).collect();
                rule.update_cpu(&words, true, &mut param, &grad, &mut st);
            }
            assert!(state.blocks[block][0].is_finite(), "{text}");
            assert!(state.blocks[block][1].is_nan(), "{text}");
        }
        assert!(maximum(1.0, f32::NAN).is_nan() && maximum(f32::NAN, 1.0).is_nan());
        // Rprop: torch.sign(NaN) is 0, so a NaN gradient moves no parameter and keeps its
        // step size (PyTorch: p unchanged, prev NaN); ±inf step as any sign does.
        let rprop = OptimizerConfig::from_table(toml::from_str("kind = 'rprop'").unwrap())
            .unwrap()
            .optimizer;
        let rule = rprop.rule();
        let mut state = rprop.new_state(4);
        let mut scalars = rule.initial_scalars();
        let mut param = [0.0f32; 4];
        let words = rule.scalars(Hyper::lr(0.1), &mut scalars).unwrap();
        let mut st: Vec<&mut [f32]> = state.blocks.iter_mut().map(|b| b.as_mut_slice()).collect();
        let grad = [f32::INFINITY, f32::NAN, 1.0, -1.0];
        rule.update_cpu(&words, true, &mut param, &grad, &mut st);
        assert_eq!(param, [-0.1, 0.0, -0.1, 0.1]);
        assert_eq!(state.blocks[1], [0.1f32; 4]);
        assert!(state.blocks[0][1].is_nan());
        assert_eq!(maximum(-1.0, 2.0), 2.0);
    }
}
