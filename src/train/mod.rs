//! Training: one step is forward → loss → backward → optimizer update, on either device.
//!
//! On the GPU a step is recorded into one command encoder and submitted once; the loss of each
//! step is written into a GPU-resident history and read back in bulk only when asked for (or
//! when the history fills, once every [`LOSS_HISTORY`] steps).

mod cpu;
mod gpu;
mod profile;
pub(crate) mod program;

use kiln_schedule::{Interval, Needs, Observation, Scheduler};

use crate::device::Device;
use crate::error::{KilnError, Result};
use crate::model::{ParamLayout, Sequential};
use crate::ops::{self, Targets};
use crate::optim::{Hyper, Optimizer, Scalars};
pub use gpu::{DEFAULT_STEPS_PER_SUBMIT, MAX_STEPS_PER_SUBMIT};
pub use profile::{KernelTime, ProfileMode};
use program::Program;

/// Losses kept on the GPU before a bulk read-back.
pub const LOSS_HISTORY: usize = 1024;

/// Parameter tensors start at multiples of this many f32s (256 bytes): the largest storage
/// offset alignment WebGPU allows, so one layout serves every device and parameters can be
/// compared across devices element by element.
pub const PARAM_ALIGN: usize = 64;

/// How to train, apart from the model and the schedule.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The optimizer (see [`crate::optim`]).
    pub optimizer: Optimizer,
    /// The largest batch `step` will be given; buffers are sized for it.
    pub max_batch: usize,
    /// Seed of the initial parameters.
    pub seed: u64,
    /// Clip the gradient to this global L2 norm before each update
    /// (torch.nn.utils.clip_grad_norm_).
    pub clip_grad_norm: Option<f32>,
    /// When the schedule steps: after every update ([`Trainer::step`] does it), or once per
    /// epoch ([`Trainer::end_epoch`], called by the training loop).
    pub schedule_interval: Interval,
}

impl Default for TrainOptions {
    /// PyTorch's SGD defaults, batches of up to 64, seed 0, no clipping.
    fn default() -> Self {
        TrainOptions {
            optimizer: Optimizer::default(),
            max_batch: 64,
            seed: 0,
            clip_grad_norm: None,
            schedule_interval: Interval::Update,
        }
    }
}

// One per trainer: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Cpu(cpu::CpuStep),
    Gpu(gpu::GpuStep),
}

/// Checks, before anything is allocated, that training `model` with `options` on `device`
/// fits this machine's memory: on the CPU device the parameters, gradients, optimizer state
/// and activations; on a GPU the same in the device's memory (where the backend says how much
/// it has; see [`GpuContext::device_memory`](crate::GpuContext::device_memory)) and the
/// host's copy of the parameters. Each GPU buffer is checked against the adapter's limits
/// when it is made. Counts are in checked arithmetic.
pub fn check_memory(device: &Device, model: &Sequential, options: &TrainOptions) -> Result<()> {
    let arena = model.param_layout(PARAM_ALIGN).len as u64;
    let footprint = Footprint::of(model, options, device);
    if let Device::Gpu(ctx) = device
        && let Some(memory) = ctx.device_memory()
    {
        match footprint.total() {
            Some(b) if b <= memory => {}
            total => {
                return Err(KilnError::invalid(
                    "model",
                    format!(
                        "training needs {} of GPU memory (parameters, gradients and optimizer \
                         state {}, batch buffers {}, scratch {}); {} has {}",
                        total.map_or("more than can be counted".into(), gib),
                        footprint
                            .arenas
                            .map_or("more than can be counted".into(), gib),
                        footprint
                            .batch
                            .map_or("more than can be counted".into(), gib),
                        footprint
                            .scratch
                            .map_or("more than can be counted".into(), gib),
                        ctx.name(),
                        gib(memory)
                    ),
                ));
            }
        }
    }
    let (bytes, what) = match device {
        Device::Cpu => (
            footprint.total(),
            "parameters, gradients, optimizer state and activations",
        ),
        Device::Gpu(_) => (arena.checked_mul(4), "the host's copy of the parameters"),
    };
    let Some(total) = host_memory() else {
        return Ok(());
    };
    match bytes {
        Some(b) if b <= total => Ok(()),
        _ => Err(KilnError::invalid(
            "model",
            format!(
                "training needs {} of host memory for {what}; this machine has {}",
                bytes.map_or("more than can be counted".into(), gib),
                gib(total)
            ),
        )),
    }
}

/// The bytes a trainer keeps on its device: the arenas (parameters, gradients, each optimizer
/// state tensor in use), the buffers of a batch (input, targets, loss terms, each layer's
/// output and its gradient) and on a GPU its scratch (the bias gradients' partial sums, and
/// split-k's partial products as if every product split k as many ways as it can: which split
/// is tuned only once the trainer is made). `None`: more than a u64 counts.
struct Footprint {
    arenas: Option<u64>,
    batch: Option<u64>,
    scratch: Option<u64>,
}

impl Footprint {
    fn of(model: &Sequential, options: &TrainOptions, device: &Device) -> Self {
        let layout = model.param_layout(PARAM_ALIGN);
        let count = 2 + options.optimizer.used_state().len() as u64;
        let out = model.output() as u64;
        let per_row = model
            .widths()
            .iter()
            .try_fold(0u64, |s, &w| s.checked_add(w as u64))
            .and_then(|w| w.checked_mul(2))
            .and_then(|w| w.checked_add(model.input() as u64 + 2 * out));
        let scratch = match device {
            Device::Cpu => Some(0),
            Device::Gpu(_) => {
                // The products and bias gradients do not depend on the norm or fusion.
                let program = Program::new(model, &layout, false, None, false);
                let most_split = crate::gpu::matmul_tiles::CANDIDATES[0]
                    .split_k(crate::gpu::matmul_tiles::MAX_SPLIT);
                let tiles = vec![Some(most_split); program.step.len()];
                let max_batch = options.max_batch;
                let floats = gpu::bias_sums_len(&program, max_batch).unwrap_or(0) as u64
                    + gpu::split_k_partials_len(&program, &tiles, max_batch).unwrap_or(0) as u64;
                floats.checked_mul(4)
            }
        };
        Footprint {
            arenas: (layout.len as u64)
                .checked_mul(count)
                .and_then(|f| f.checked_mul(4)),
            batch: per_row
                .and_then(|r| r.checked_mul(options.max_batch as u64))
                .and_then(|f| f.checked_mul(4)),
            scratch,
        }
    }

    fn total(&self) -> Option<u64> {
        self.arenas?
            .checked_add(self.batch?)?
            .checked_add(self.scratch?)
    }
}

/// Bytes in GiB, or MiB below one GiB.
fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The machine's memory in bytes, where the system says (Linux's /proc/meminfo).
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a batch's values that are not finite are called in the error.
const X_VALUES: &str = "input batch `x`";

/// Where a step's batch comes from.
#[derive(Clone, Copy)]
enum Batch<'a> {
    /// Given by the caller, uploaded with the step.
    Host { x: &'a [f32], targets: Targets<'a> },
    /// Given by the caller and already in the GPU trainer's batch buffers
    /// (`GpuStep::upload_batch`).
    Uploaded,
    /// Rows `order[start..start + batch]` of the data loaded on the device.
    Resident { start: usize },
}

/// What a schedule stepped every `interval` needs after each update.
fn per_update_needs(schedule: &Scheduler, interval: Interval) -> Needs {
    match interval {
        Interval::Update => schedule.needs(),
        Interval::Epoch => Needs::default(),
    }
}

/// Everything needed to continue a training run exactly where it stopped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Updates done.
    pub steps: u64,
    /// The scheduler, serialised.
    pub schedule: serde_json::Value,
    /// Observations made but not yet given to a one-update-late schedule: (update, values).
    #[serde(with = "crate::float_json::observations")]
    pub observations: Vec<(u64, Observation)>,
    /// The last finite observation (stands in for skipped updates', see
    /// [`Trainer::skip_non_finite_losses`]).
    #[serde(default)]
    pub last_finite: Observation,
    /// The parameter arena.
    #[serde(skip)]
    pub params: Vec<f32>,
    /// The optimizer's state.
    #[serde(default)]
    pub optimizer: OptimizerState,
}

/// An optimizer's scalar state and its state tensors in binding order (unused ones empty), as a
/// backend reports and restores them.
type OptimizerSnapshot = (Scalars, Vec<Vec<f32>>);

/// An optimizer's state, by PyTorch's names.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OptimizerState {
    /// torch.optim's name of the optimizer that made it.
    pub name: String,
    /// Scalar state (`step`, NAdam's `mu_product`).
    pub scalars: Scalars,
    /// Each used state tensor (`exp_avg`, …), laid out like the parameter arena.
    #[serde(skip)]
    pub blocks: Vec<(String, Vec<f32>)>,
}

/// A model being trained on a device.
pub struct Trainer {
    model: Sequential,
    layout: ParamLayout,
    options: TrainOptions,
    schedule: Scheduler,
    backend: Backend,
    steps: u64,
    first_step: u64,
    /// Observations carried over from a checkpoint, or read early for one.
    carried: Vec<(u64, Observation)>,
    skip_non_finite: bool,
    /// The last finite observation, standing in for a skipped update's.
    last_finite: Observation,
    /// Rows of the data loaded on the device, and entries of the order set for it.
    data_rows: Option<usize>,
    order_len: usize,
    /// Rows loaded by `load_validation`.
    validation_rows: Option<usize>,
    /// Bytes the loaded training data and validation rows take on the device.
    resident: (u64, u64),
    /// Why the schedule failed to step, if it did: it is left part-way through that step, so
    /// no later update may use it.
    schedule_failed: Option<String>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let device = match &self.backend {
            Backend::Cpu(_) => "cpu".to_string(),
            Backend::Gpu(s) => s.device_name(),
        };
        f.debug_struct("Trainer")
            .field("model", &self.model)
            .field("device", &device)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Trainer {
    /// A trainer with parameters initialised from `options.seed` (see
    /// [`Sequential::init_params`]).
    pub fn new(
        device: &Device,
        model: Sequential,
        options: TrainOptions,
        schedule: Scheduler,
    ) -> Result<Self> {
        check_memory(device, &model, &options)?;
        let layout = model.param_layout(PARAM_ALIGN);
        let params = model.init_params(&layout, options.seed)?;
        Self::with_params(device, model, options, schedule, params)
    }

    /// A trainer starting from given parameters, laid out as [`Sequential::param_layout`]
    /// with [`PARAM_ALIGN`]. Like [`Trainer::new`], checks the device's memory before
    /// allocating anything on it ([`check_memory`]).
    pub fn with_params(
        device: &Device,
        model: Sequential,
        mut options: TrainOptions,
        schedule: Scheduler,
        params: Vec<f32>,
    ) -> Result<Self> {
        // A schedule that cycles momentum sets it from construction on (PyTorch's CyclicLR
        // and OneCycleLR write it into the optimizer when they are built).
        if schedule.momentum().is_some() {
            options.optimizer = options.optimizer.cycling_momentum()?;
        }
        if options.max_batch == 0 {
            return Err(KilnError::invalid("max_batch", "must be at least 1"));
        }
        check_memory(device, &model, &options)?;
        let layout = model.param_layout(PARAM_ALIGN);
        // Parameter offsets (the optimizer's no-decay ranges, the kernels' indices) are u32.
        if u32::try_from(layout.len).is_err() {
            return Err(KilnError::invalid(
                "model",
                format!(
                    "{} parameters (with alignment); a trainer holds at most {}",
                    layout.len,
                    u32::MAX
                ),
            ));
        }
        ops::check_len(
            "parameters",
            "params",
            params.len(),
            layout.len,
            "the model's parameter layout",
        )?;
        ops::check_finite("initial parameters", &params)?;
        if let Some(max_norm) = options.clip_grad_norm {
            crate::device::check_max_norm(max_norm)?;
        }
        let needs = per_update_needs(&schedule, options.schedule_interval);
        // The CPU device runs the plain program, the reference the GPU's fused products are
        // held to.
        let fuse = match device {
            Device::Cpu => false,
            Device::Gpu(ctx) => ctx.fuses_activations(),
        };
        let program = Program::new(
            &model,
            &layout,
            needs.grad_norm,
            options.clip_grad_norm,
            fuse,
        );
        let backend = match device {
            Device::Cpu => Backend::Cpu(cpu::CpuStep::new(
                &model, &layout, program, &options, params, needs,
            )),
            Device::Gpu(ctx) => Backend::Gpu(gpu::GpuStep::new(
                ctx.clone(),
                &model,
                &layout,
                program,
                &options,
                &params,
                needs,
            )?),
        };
        Ok(Trainer {
            model,
            layout,
            options,
            schedule,
            backend,
            steps: 0,
            first_step: 0,
            carried: Vec::new(),
            skip_non_finite: false,
            last_finite: Observation::default(),
            data_rows: None,
            order_len: 0,
            validation_rows: None,
            resident: (0, 0),
            schedule_failed: None,
        })
    }

    /// The device it trains on.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Cpu(_) => Device::Cpu,
            Backend::Gpu(s) => Device::Gpu(s.context()),
        }
    }

    /// The model being trained.
    pub fn model(&self) -> &Sequential {
        &self.model
    }

    /// Where each parameter tensor lives in the arenas.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The update this trainer started at: 0, or the step a checkpoint resumed from.
    pub fn first_step(&self) -> u64 {
        self.first_step
    }

    /// Updates done so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The rate the next update will use.
    pub fn lr(&self) -> f64 {
        self.schedule.lr()
    }

    /// The momentum (β1 for the Adam family) the next update will use where the schedule
    /// cycles it (`cyclic`, `one_cycle`); `None`: the optimizer's own.
    pub fn momentum(&self) -> Option<f64> {
        self.schedule.momentum()
    }

    /// One update on a batch: `x` is [B, input] row-major, `targets` one row (or label) per
    /// sample. Returns the learning rate it used. The batch's loss is recorded, not returned:
    /// on the GPU, reading it here would stall the pipeline (see [`Trainer::losses`]).
    pub fn step(&mut self, x: &[f32], targets: Targets) -> Result<f64> {
        self.step_checked(x, targets, true)
    }

    /// [`Trainer::step`] for a batch drawn from data checked when it was loaded (a `Run`'s):
    /// its shapes are checked, its values not again — a scan of every value each update is
    /// host time the device waits for.
    pub(crate) fn step_loaded(&mut self, x: &[f32], targets: Targets) -> Result<f64> {
        self.step_checked(x, targets, false)
    }

    fn step_checked(&mut self, x: &[f32], targets: Targets, values: bool) -> Result<f64> {
        let batch = if values {
            self.check_batch_except_x_values(x, Some(targets))?
        } else {
            self.check_batch_shape(x, targets)?
        };
        let what = values.then_some(X_VALUES);
        let source = match &mut self.backend {
            // x's values are checked as they are copied up: one pass over the batch, not two.
            // Before `update`, so a bad batch changes nothing (the schedule steps there).
            Backend::Gpu(s) => {
                s.upload_batch(x, targets, what)?;
                Batch::Uploaded
            }
            Backend::Cpu(_) => {
                if let Some(what) = what {
                    ops::check_finite(what, x)?;
                }
                Batch::Host { x, targets }
            }
        };
        self.update(batch, source)
    }

    /// Puts a data set on the trainer's device, checked once here: `x` [N, input] row-major
    /// and its targets, as [`Trainer::step`] takes them. Batches are then taken from it by
    /// [`Trainer::step_data`] in the order [`Trainer::set_order`] gives, and on a GPU nothing
    /// of a batch crosses from the host: each step gathers its rows there. Replaces any data
    /// loaded before; the order must be set again.
    pub fn load_data(&mut self, x: &[f32], targets: Targets) -> Result<()> {
        self.load_data_checked(x, targets, true)
    }

    /// [`Trainer::load_data`] for rows drawn from data checked when it was read (a `Run`'s
    /// streamed windows): shapes are checked, values not again.
    pub(crate) fn load_loaded_data(&mut self, x: &[f32], targets: Targets) -> Result<()> {
        self.load_data_checked(x, targets, false)
    }

    fn load_data_checked(&mut self, x: &[f32], targets: Targets, values: bool) -> Result<()> {
        let rows = if values {
            let rows = self.check_batch(x, None)?;
            ops::check_targets(self.model.loss(), targets, rows, self.model.output())?;
            rows
        } else {
            self.check_shapes("resident data", x, targets)?
        };
        let bytes = self.check_resident(rows)?;
        let y = crate::gpu::kernels::targets_as_f32(targets);
        match &mut self.backend {
            Backend::Cpu(s) => s.load_data(x, &y, rows),
            Backend::Gpu(s) => s.load_data(x, &y, rows)?,
        }
        self.data_rows = Some(rows);
        self.order_len = 0;
        // Fewer rows reuse the buffers of more (a streamed data set's last window).
        self.resident.0 = self.resident.0.max(bytes);
        Ok(())
    }

    /// The order [`Trainer::step_data`] takes the loaded rows in (an epoch's shuffle, say):
    /// every entry a row of the data. Uploaded once, for as many steps as use it.
    pub fn set_order(&mut self, order: &[u32]) -> Result<()> {
        let Some(rows) = self.data_rows else {
            return Err(KilnError::invalid(
                "order",
                "no data is loaded (Trainer::load_data)",
            ));
        };
        if order.is_empty() || order.len() > rows.max(1) * 64 {
            return Err(KilnError::invalid(
                "order",
                format!("{} entries for {rows} rows", order.len()),
            ));
        }
        if let Some(i) = order.iter().position(|&r| r as usize >= rows) {
            return Err(KilnError::invalid(
                "order",
                format!("entry {i} is row {}, the data has {rows}", order[i]),
            ));
        }
        match &mut self.backend {
            Backend::Cpu(s) => s.set_order(order),
            Backend::Gpu(s) => s.set_order(order)?,
        }
        self.order_len = order.len();
        Ok(())
    }

    /// One update on rows `order[start..start + rows]` of the loaded data (see
    /// [`Trainer::load_data`]); otherwise as [`Trainer::step`].
    pub fn step_data(&mut self, start: usize, rows: usize) -> Result<f64> {
        let end = start
            .checked_add(rows)
            .filter(|&e| rows > 0 && e <= self.order_len);
        if end.is_none() {
            return Err(KilnError::shape(
                "training batch",
                format!(
                    "rows {start}..{start}+{rows} of an order of {} entries (set by set_order)",
                    self.order_len
                ),
            ));
        }
        self.check_max_batch(rows)?;
        self.update(rows, Batch::Resident { start })
    }

    /// One update of `batch` rows from `source`: the schedule's step around the device's.
    fn update(&mut self, batch: usize, source: Batch<'_>) -> Result<f64> {
        self.check_schedule()?;
        let per_update = self.options.schedule_interval == Interval::Update;
        let needs = self.per_update_needs();
        let observed = needs.any();
        if observed && self.steps >= 2 {
            // Observation-driven schedules see each update's loss and gradient norm one update
            // late, on every device: the GPU has update t+1 queued before update t's numbers
            // are read, so it never waits for the host.
            // What the schedule follows, and nothing else: a number it does not read cannot
            // stop it.
            let o = self.observation(self.steps - 2)?;
            let o = Observation {
                loss: o.loss.filter(|_| needs.loss),
                grad_norm_sq: o.grad_norm_sq.filter(|_| needs.grad_norm),
            };
            let o = if self.skip_non_finite {
                self.finite_or_last(o)
            } else {
                let update = self.steps - 2;
                for (what, v) in [("loss", o.loss), ("squared gradient norm", o.grad_norm_sq)] {
                    if let Some(v) = v.filter(|v| !v.is_finite()) {
                        return Err(KilnError::Diverged {
                            what: format!(
                                "the {what} of update {update}, which the schedule follows,"
                            ),
                            value: v,
                            why: crate::error::TRAINING_DIVERGED,
                        });
                    }
                }
                o
            };
            self.step_schedule(&o)?;
        }
        // Finite and ≥ 0: the scheduler checks every rate it gives, in f64.
        let lr = self.schedule.lr();
        if let Some(past) = crate::optim::past_f32(lr) {
            // The schedule cannot go on from a rate no update can use: later updates are
            // refused the same way (`check_schedule`).
            let why = format!("the rate for update {} is {lr:e}, {past}", self.steps);
            self.schedule_failed = Some(why.clone());
            return Err(KilnError::invalid("schedule", why));
        }
        let momentum = self.schedule.momentum();
        if let Some(why) =
            momentum.and_then(|m| self.options.optimizer.refuse_momentum(m, self.steps))
        {
            self.schedule_failed = Some(why.clone());
            return Err(KilnError::invalid("schedule", why));
        }
        let hyper = Hyper { lr, momentum };
        match &mut self.backend {
            Backend::Cpu(s) => s.step(source, batch, hyper)?,
            Backend::Gpu(s) => s.step(source, batch, hyper)?,
        }
        self.steps += 1;
        if per_update && !observed {
            // The rate this step gives is the next update's. If it cannot give one, that
            // update is refused (`check_schedule`, with why), not this one, which happened: a
            // run whose schedule has no rate past its last update (one_cycle's three phases
            // end below zero) still ends, saves and checkpoints.
            let _recorded_in_schedule_failed = self.step_schedule(&Observation::default());
        }
        Ok(lr)
    }

    /// Times the next update `f` runs (a [`Trainer::step`] or [`Trainer::step_data`]), as
    /// `mode` says: its kernels one by one, in the order they run, or the update whole. The
    /// update is a real one: it trains and counts as any other. On a GPU, updates queued
    /// before it are submitted first and it is submitted alone; the times come from
    /// timestamp queries (an error on an adapter without them). An error if `f` fails or
    /// runs no update.
    pub fn profile<T>(
        &mut self,
        mode: ProfileMode,
        f: impl FnOnce(&mut Trainer) -> Result<T>,
    ) -> Result<Vec<KernelTime>> {
        match &mut self.backend {
            Backend::Cpu(s) => s.profile_next(mode),
            Backend::Gpu(s) => s.profile_next(mode)?,
        }
        let ran = f(self);
        // Taken whether or not `f` succeeded, so no later update is timed by surprise.
        let times = match &mut self.backend {
            Backend::Cpu(s) => Ok(s.take_profile()),
            Backend::Gpu(s) => s.take_profile(),
        };
        ran?;
        times?.ok_or_else(|| {
            KilnError::invalid("profile", "the function given to profile ran no update")
        })
    }

    /// With `schedule_interval` "epoch": `scheduler.step()` at the end of an epoch, given the
    /// metric the schedule watches (its `loss`), if it watches one. The rate it sets holds for
    /// every update of the next epoch.
    pub fn end_epoch(&mut self, observation: &Observation) -> Result<()> {
        if self.options.schedule_interval != Interval::Epoch {
            return Err(KilnError::invalid(
                "schedule.interval",
                "end_epoch steps a schedule whose interval is \"epoch\"; this one steps per update",
            ));
        }
        self.check_schedule()?;
        self.step_schedule(observation)
    }

    /// Steps the schedule, keeping why if it fails (see `schedule_failed`).
    fn step_schedule(&mut self, observation: &Observation) -> Result<()> {
        self.schedule.step(observation).map_err(|e| {
            self.schedule_failed = Some(e.to_string());
            e.into()
        })
    }

    /// Errs if the schedule failed to step before.
    fn check_schedule(&self) -> Result<()> {
        match &self.schedule_failed {
            Some(why) => Err(KilnError::invalid(
                "schedule",
                format!(
                    "it failed to step after update {}: {why}",
                    self.steps.saturating_sub(1)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Replaces the parameters (layout: [`Trainer::layout`]); the optimizer state is kept.
    /// Used to restore the best weights an early stop kept.
    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        ops::check_len(
            "parameters",
            "params",
            params.len(),
            self.layout.len,
            "the model's parameter layout",
        )?;
        ops::check_finite("parameters", params)?;
        match &mut self.backend {
            Backend::Cpu(s) => s.set_parameters(params),
            Backend::Gpu(s) => s.set_parameters(params)?,
        }
        Ok(())
    }

    /// How many updates from loaded data ([`Trainer::step_data`]) a GPU queues and submits
    /// together, their learning rates and other uniforms written in one transfer (1 to
    /// [`MAX_STEPS_PER_SUBMIT`]; default [`DEFAULT_STEPS_PER_SUBMIT`]). Results do not depend
    /// on it: anything that reads from the device, or writes what a queued update uses,
    /// submits the queue first. Updates go one at a time regardless when the schedule reads
    /// every update's loss or gradient norm, and on the CPU device. A GPU error in a queued
    /// update is reported by the call that submits it.
    pub fn set_steps_per_submit(&mut self, n: usize) -> Result<()> {
        if !(1..=MAX_STEPS_PER_SUBMIT).contains(&n) {
            return Err(KilnError::invalid(
                "steps_per_submit",
                format!("{n} is not between 1 and {MAX_STEPS_PER_SUBMIT}"),
            ));
        }
        match &mut self.backend {
            Backend::Cpu(_) => Ok(()),
            Backend::Gpu(s) => s.set_steps_per_submit(n),
        }
    }

    /// When the schedule steps.
    pub fn schedule_interval(&self) -> Interval {
        self.options.schedule_interval
    }

    /// The observations the schedule reads after each update (none when it steps per epoch).
    fn per_update_needs(&self) -> Needs {
        per_update_needs(&self.schedule, self.options.schedule_interval)
    }

    /// The loss of every update this trainer ran: `losses()[i]` is the batch loss of update
    /// [`Trainer::first_step`] + i at the weights before it. On the GPU this reads the pending
    /// losses back in one go.
    pub fn losses(&mut self) -> Result<&[f32]> {
        match &mut self.backend {
            Backend::Cpu(s) => Ok(s.losses()),
            Backend::Gpu(s) => s.losses(),
        }
    }

    /// The model's output for `x` [B, input], in batches of at most `max_batch`.
    pub fn predict(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        self.check_batch(x, None)?;
        self.predict_loaded(x)
    }

    /// Device bytes to predict `rows` rows `x` there: the rows and room for every output.
    fn prediction_bytes(&self, x: &[f32], rows: usize) -> u64 {
        let outputs = (rows as u64).saturating_mul(self.model.output() as u64);
        (x.len() as u64).saturating_add(outputs).saturating_mul(4)
    }

    /// [`Trainer::predict`] for rows checked when they were loaded (a `Run`'s validation
    /// rows): their shape is checked, their values not again at every evaluation.
    pub(crate) fn predict_loaded(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let input = self.model.input();
        let rows = ops::check_rows("prediction input", "x", x.len(), input)?;
        // More rows than a batch on a GPU: up in one write, predicted there, back in one read,
        // when they fit beside what the device holds; else batch by batch.
        if rows > self.options.max_batch && matches!(self.backend, Backend::Gpu(_)) {
            let bytes = self.prediction_bytes(x, rows);
            let resident = self.resident.0.saturating_add(self.resident.1);
            if self
                .check_device_room("prediction rows", bytes, resident)
                .is_ok()
                && let Backend::Gpu(s) = &mut self.backend
            {
                match s.predict_all(x, rows) {
                    Err(KilnError::OverLimit { .. }) => {}
                    done => return done,
                }
            }
        }
        // Room for every output first: an error, not an abort, if it cannot be had.
        let len = ops::elements("predictions", x.len() / input, self.model.output())?;
        let mut out = ops::with_room("predictions", len)?;
        for chunk in x.chunks(self.options.max_batch * input) {
            let rows = chunk.len() / input;
            out.extend(match &mut self.backend {
                Backend::Cpu(s) => s.predict(chunk, rows)?,
                Backend::Gpu(s) => s.predict(chunk, rows)?,
            });
        }
        Ok(out)
    }

    /// Puts rows to evaluate on (a validation split, `x` [N, input] row-major) on the
    /// trainer's device, checked once here; [`Trainer::predict_validation`] then predicts
    /// them there without sending them again. Replaces any loaded before.
    pub fn load_validation(&mut self, x: &[f32]) -> Result<()> {
        ops::check_rows("validation rows", "x", x.len(), self.model.input())?;
        ops::check_finite("validation rows `x`", x)?;
        self.load_loaded_validation(x)
    }

    /// [`Trainer::load_validation`] for rows checked when they were read (a `Run`'s): their
    /// shape is checked, their values not again.
    pub(crate) fn load_loaded_validation(&mut self, x: &[f32]) -> Result<()> {
        let rows = ops::check_rows("validation rows", "x", x.len(), self.model.input())?;
        let bytes = self.prediction_bytes(x, rows);
        self.check_device_room("validation rows", bytes, self.resident.0)?;
        // The device lets the old rows go before it loads these.
        self.validation_rows = None;
        self.resident.1 = 0;
        match &mut self.backend {
            Backend::Cpu(s) => s.load_validation(x),
            Backend::Gpu(s) => s.load_validation(x, rows)?,
        }
        self.validation_rows = Some(rows);
        self.resident.1 = bytes;
        Ok(())
    }

    /// The model's output for the rows [`Trainer::load_validation`] loaded, equal to the bit
    /// to [`Trainer::predict`] on them. On a GPU, the forward passes run over the resident
    /// rows and the outputs come back in one read.
    pub fn predict_validation(&mut self) -> Result<Vec<f32>> {
        if self.validation_rows.is_none() {
            return Err(KilnError::invalid(
                "validation",
                "no validation rows are loaded (Trainer::load_validation)",
            ));
        }
        match &mut self.backend {
            Backend::Cpu(s) => s.predict_validation(self.options.max_batch),
            Backend::Gpu(s) => s.predict_validation(),
        }
    }

    /// The parameter arena (layout: [`Trainer::layout`]).
    pub fn parameters(&self) -> Result<Vec<f32>> {
        match &self.backend {
            Backend::Cpu(s) => Ok(s.parameters().to_vec()),
            Backend::Gpu(s) => s.parameters(),
        }
    }

    fn observation(&mut self, update: u64) -> Result<Observation> {
        if let Some(i) = self.carried.iter().position(|(u, _)| *u == update) {
            return Ok(self.carried.remove(i).1);
        }
        match &mut self.backend {
            Backend::Cpu(s) => s.observation(update).ok_or_else(|| {
                KilnError::invalid(
                    "observations",
                    format!("no observation was recorded for update {update}"),
                )
            }),
            Backend::Gpu(s) => s.observation(update),
        }
    }

    /// With `true`, an update whose batch loss is NaN or infinite leaves the parameters and
    /// the optimizer's state tensors unchanged; the check runs on the device, without a
    /// read-back. The optimizer's `step` still advances (the host cannot know, on a GPU,
    /// without a read-back), so a later Adam-family update uses the bias corrections of its
    /// update number.
    /// Observation-driven schedules are then given the last finite observation in place of a
    /// skipped update's: the update did not happen, so it should not steer the rate.
    pub fn skip_non_finite_losses(&mut self, skip: bool) {
        self.skip_non_finite = skip;
        match &mut self.backend {
            Backend::Cpu(s) => s.skip_non_finite = skip,
            Backend::Gpu(s) => s.skip_non_finite = skip,
        }
    }

    /// `o` with each non-finite value replaced by the last finite one seen (values with no
    /// finite predecessor are left for the schedule to reject).
    fn finite_or_last(&mut self, o: Observation) -> Observation {
        let pick = |v: Option<f64>, last: &mut Option<f64>| match v {
            Some(x) if x.is_finite() => {
                *last = Some(x);
                Some(x)
            }
            Some(x) => last.or(Some(x)),
            None => None,
        };
        Observation {
            loss: pick(o.loss, &mut self.last_finite.loss),
            grad_norm_sq: pick(o.grad_norm_sq, &mut self.last_finite.grad_norm_sq),
        }
    }

    /// The state to resume from (see [`Trainer::resume`]). Waits for the GPU.
    pub fn state(&mut self) -> Result<TrainerState> {
        if !self.schedule.can_save() {
            return Err(KilnError::invalid(
                "schedule",
                "a closure or user-type schedule cannot be saved in a checkpoint",
            ));
        }
        if self.per_update_needs().any() {
            // The schedule has yet to see the last two updates: read them now, keep them.
            for update in self.steps.saturating_sub(2)..self.steps {
                if !self.carried.iter().any(|(u, _)| *u == update) {
                    let o = self.observation(update)?;
                    self.carried.push((update, o));
                }
            }
        }
        let (params, (scalars, blocks)) = match &self.backend {
            Backend::Cpu(s) => (s.parameters().to_vec(), s.optimizer_state()),
            Backend::Gpu(s) => (s.parameters()?, s.optimizer_state()?),
        };
        let schedule = serde_json::to_value(&self.schedule)
            .map_err(|e| KilnError::invalid("schedule", format!("cannot be saved: {e}")))?;
        Ok(TrainerState {
            steps: self.steps,
            schedule,
            observations: self.carried.clone(),
            last_finite: self.last_finite,
            params,
            optimizer: OptimizerState {
                name: self.options.optimizer.name().to_string(),
                scalars,
                blocks: self
                    .options
                    .optimizer
                    .state_blocks()
                    .iter()
                    .zip(blocks)
                    .filter(|(b, _)| b.used)
                    .map(|(b, v)| (b.name.to_string(), v))
                    .collect(),
            },
        })
    }

    /// A trainer that continues from `state` as if it had never stopped.
    pub fn resume(
        device: &Device,
        model: Sequential,
        options: TrainOptions,
        state: TrainerState,
    ) -> Result<Self> {
        // Counts past 2^53 come only from a damaged file, and the next update would overflow.
        if state.steps > 1 << 53 {
            return Err(KilnError::invalid(
                "checkpoint.trainer.steps",
                format!(
                    "{} updates is out of range (a damaged checkpoint?)",
                    state.steps
                ),
            ));
        }
        let schedule: Scheduler = serde_json::from_value(state.schedule)
            .map_err(|e| KilnError::invalid("checkpoint.schedule", e.to_string()))?;
        schedule
            .check_state()
            .map_err(|e| KilnError::invalid("checkpoint.schedule", e.to_string()))?;
        // A rate the schedule could not give after the last update is refused at the update
        // that would use it, as in the run that saved it (`schedule_failed`): a checkpoint at
        // the run's end still resumes to that end.
        let rate_refusal = schedule.rate_refusal();
        // A schedule stepped per update has stepped once per update, or with observations
        // one update late, once per update before the last two.
        let needs = per_update_needs(&schedule, options.schedule_interval);
        if options.schedule_interval == Interval::Update {
            let want = if needs.any() {
                state.steps.saturating_sub(2)
            } else {
                state.steps
            };
            if schedule.updates() != want {
                return Err(KilnError::invalid(
                    "checkpoint.schedule",
                    format!(
                        "the schedule stepped {} times, but after {} updates it steps {want} \
                         (a damaged checkpoint?)",
                        schedule.updates(),
                        state.steps
                    ),
                ));
            }
        }
        let mut trainer = Self::with_params(device, model, options, schedule, state.params)?;
        trainer.schedule_failed = rate_refusal.map(|e| e.to_string());
        let mut opt = state.optimizer;
        let optimizer = &trainer.options.optimizer;
        if opt.name != optimizer.name() {
            return Err(KilnError::invalid(
                "checkpoint.optimizer",
                format!(
                    "the checkpoint was made with {:?}, the run asks for {:?}; a run cannot \
                     change its optimizer when it resumes",
                    opt.name,
                    optimizer.name()
                ),
            ));
        }
        // Every block this configuration uses, and no other, in binding order.
        let known = optimizer.state_blocks();
        if let Some(i) = (1..opt.blocks.len())
            .find(|&i| opt.blocks[..i].iter().any(|(n, _)| *n == opt.blocks[i].0))
        {
            return Err(KilnError::invalid(
                "checkpoint.optimizer",
                format!(
                    "`{}` is there twice (a damaged checkpoint?)",
                    opt.blocks[i].0
                ),
            ));
        }
        if let Some((name, _)) = opt
            .blocks
            .iter()
            .find(|(n, _)| !known.iter().any(|b| b.used && b.name == n.as_str()))
        {
            return Err(KilnError::invalid(
                "checkpoint.optimizer",
                format!(
                    "the checkpoint holds `{name}`, which {} with these options does not keep (an option such as amsgrad, momentum or centered changed?)",
                    optimizer.name()
                ),
            ));
        }
        let mut blocks = Vec::with_capacity(known.len());
        for block in &known {
            if !block.used {
                blocks.push(Vec::new());
                continue;
            }
            let Some((_, v)) = opt.blocks.iter_mut().find(|(n, _)| n == block.name) else {
                return Err(KilnError::invalid(
                    "checkpoint.optimizer",
                    format!(
                        "no `{}` state for {} (the checkpoint was made with other options?)",
                        block.name,
                        optimizer.name()
                    ),
                ));
            };
            ops::check_len(
                "checkpoint",
                block.name,
                v.len(),
                trainer.layout.len,
                "the parameter layout",
            )?;
            block.check_values(
                v,
                &format!("checkpoint optimizer state `{}`", block.name),
                &format!("checkpoint.optimizer.{}", block.name),
                " (a damaged checkpoint?)",
            )?;
            blocks.push(std::mem::take(v));
        }
        crate::optim::check_scalars(&opt.scalars)?;
        // Every update advances the optimizer's `step`, skipped ones too (see CpuStep): a
        // count that differs from the trainer's would put bias corrections out of step.
        if let Some(&step) = opt.scalars.get("step")
            && step != state.steps as f64
        {
            return Err(KilnError::invalid(
                "checkpoint.optimizer.scalars.step",
                format!(
                    "{step} but the trainer made {} updates (a damaged checkpoint?)",
                    state.steps
                ),
            ));
        }
        let mut scalars = optimizer.rule().initial_scalars();
        if let Some(name) = opt.scalars.keys().find(|n| !scalars.contains_key(*n)) {
            return Err(KilnError::invalid(
                "checkpoint.optimizer.scalars",
                format!(
                    "`{name}` is not a scalar {} keeps (a damaged checkpoint?)",
                    optimizer.name()
                ),
            ));
        }
        for (name, value) in scalars.iter_mut() {
            *value = *opt.scalars.get(name).ok_or_else(|| {
                KilnError::invalid(
                    "checkpoint.optimizer.scalars",
                    format!("no `{name}` for {}", optimizer.name()),
                )
            })?;
        }
        match &mut trainer.backend {
            Backend::Cpu(s) => s.restore(scalars, blocks, state.steps),
            Backend::Gpu(s) => s.restore(scalars, &blocks, state.steps)?,
        }
        // A one-update-late schedule reads the observations of the two updates before the
        // checkpoint from it: they must be there, once each, and nothing else.
        if !trainer.per_update_needs().any() && !state.observations.is_empty() {
            return Err(KilnError::invalid(
                "checkpoint.trainer.observations",
                "the schedule reads no observations after each update, and the checkpoint \
                 holds some (a damaged checkpoint, or made under another schedule?)",
            ));
        }
        if trainer.per_update_needs().any() {
            let wanted: Vec<u64> = (state.steps.saturating_sub(2)..state.steps).collect();
            let mut have: Vec<u64> = state.observations.iter().map(|(u, _)| *u).collect();
            have.sort_unstable();
            if have != wanted {
                return Err(KilnError::invalid(
                    "checkpoint.trainer.observations",
                    format!(
                        "the schedule follows each update's observations, so a checkpoint after update {} must hold those of updates {wanted:?}; it holds {have:?}",
                        state.steps
                    ),
                ));
            }
        }
        trainer.steps = state.steps;
        trainer.first_step = state.steps;
        trainer.carried = state.observations;
        trainer.last_finite = state.last_finite;
        Ok(trainer)
    }

    /// The shape checks of [`Trainer::check_batch`] alone: rows, max_batch, target count.
    fn check_batch_shape(&self, x: &[f32], targets: Targets) -> Result<usize> {
        let rows = self.check_shapes("training batch", x, targets)?;
        self.check_max_batch(rows)?;
        Ok(rows)
    }

    /// `x` whole rows of the model's input and `targets` one per row (labels) or per row and
    /// output (values); returns the rows. Shapes only, not values.
    fn check_shapes(&self, ctx: &str, x: &[f32], targets: Targets) -> Result<usize> {
        let rows = ops::check_rows(ctx, "x", x.len(), self.model.input())?;
        let (len, want) = match targets {
            Targets::Classes(c) => (c.len(), rows),
            Targets::Values(v) => (v.len(), rows * self.model.output()),
        };
        ops::check_len(ctx, "targets", len, want, "one per row and output")?;
        Ok(rows)
    }

    /// Checks that `rows` rows of training data can be loaded on the device (`load_data`):
    /// each buffer within the binding limit and all of them in the memory left beside the
    /// trainer's own buffers and any validation rows. Returns their bytes. Allocates nothing:
    /// a run sizes the windows of a streamed data set with it.
    pub fn check_resident(&self, rows: usize) -> Result<u64> {
        let (input, output) = (self.model.input() as u64, self.model.output() as u64);
        let rows = rows as u64;
        let x = rows.saturating_mul(input).saturating_mul(4);
        let y = rows.saturating_mul(output).saturating_mul(4);
        if let Backend::Gpu(s) = &self.backend {
            let ctx = s.context();
            ctx.check_size("resident data x", x, true)?;
            ctx.check_size("resident data targets", y, true)?;
        }
        // x, the targets and an order of every row (a longer order set later is not counted).
        let bytes = x.saturating_add(y).saturating_add(rows.saturating_mul(4));
        // Data that grows is allocated beside the old before the old is let go.
        let old = if bytes > self.resident.0 {
            self.resident.0
        } else {
            0
        };
        self.check_device_room("resident data", bytes, self.resident.1.saturating_add(old))?;
        Ok(bytes)
    }

    /// Holds `bytes` of device memory for training data loaded later (a streamed data set's
    /// window), so that rows loaded before it (validation rows) leave room for it.
    pub(crate) fn reserve_resident(&mut self, bytes: u64) {
        self.resident.0 = self.resident.0.max(bytes);
    }

    /// On a GPU whose memory is known: `bytes` more for `what` fit beside the trainer's own
    /// buffers and `other` bytes of resident rows. Errs with `OverLimit`, so that a run can
    /// keep such rows on the host instead.
    fn check_device_room(&self, what: &str, bytes: u64, other: u64) -> Result<()> {
        let Backend::Gpu(s) = &self.backend else {
            return Ok(());
        };
        let ctx = s.context();
        let Some(memory) = ctx.device_memory() else {
            return Ok(());
        };
        let used = Footprint::of(&self.model, &self.options, &Device::Gpu(ctx))
            .total()
            .and_then(|t| t.checked_add(other))
            .unwrap_or(u64::MAX);
        let room = memory.saturating_sub(used);
        if bytes > room {
            return Err(KilnError::OverLimit {
                tensor: what.to_string(),
                size: bytes,
                limit_name: "device memory left beside the model",
                limit: room,
            });
        }
        Ok(())
    }

    /// A training batch of `rows` fits the buffers sized for `max_batch`.
    fn check_max_batch(&self, rows: usize) -> Result<()> {
        if rows > self.options.max_batch {
            return Err(KilnError::shape(
                "training batch",
                format!(
                    "batch of {rows} rows is over max_batch = {}",
                    self.options.max_batch
                ),
            ));
        }
        Ok(())
    }

    /// Checks a batch (and its targets, for a training step); returns its row count.
    fn check_batch(&self, x: &[f32], targets: Option<Targets>) -> Result<usize> {
        let rows = self.check_batch_except_x_values(x, targets)?;
        ops::check_finite(X_VALUES, x)?;
        Ok(rows)
    }

    /// [`Trainer::check_batch`] but for the finiteness of `x`'s values.
    fn check_batch_except_x_values(&self, x: &[f32], targets: Option<Targets>) -> Result<usize> {
        let input = self.model.input();
        let ctx = if targets.is_some() {
            "training batch"
        } else {
            "prediction input"
        };
        let rows = ops::check_rows(ctx, "x", x.len(), input)?;
        let Some(targets) = targets else {
            return Ok(rows);
        };
        self.check_max_batch(rows)?;
        ops::check_targets(self.model.loss(), targets, rows, self.model.output())?;
        Ok(rows)
    }
}
