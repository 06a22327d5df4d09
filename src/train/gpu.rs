//! The training step on a GPU. Buffers, bind groups and pipelines are made once; a step writes
//! the batch, the targets and the small uniforms that change (loss slot, the optimizer's
//! scalars), then records every dispatch of the step program into one compute pass of one
//! command encoder and submits it once.
//!
//! Updates on resident data are queued instead, up to `steps_per_submit` of them, and go to
//! the GPU in one submission with their uniforms in one write: whatever reads from the device
//! or writes what the queued updates use submits them first, so nothing can tell the
//! difference but the host's time.

use std::sync::{Arc, Mutex};

use kiln_schedule::Observation;

use super::profile::{GATHER, KernelTime, ProfileMode, WHOLE_UPDATE};
use super::program::{Epilogue, Instr, Program, Slot};
use super::{LOSS_HISTORY, OptimizerSnapshot, TrainOptions};
use crate::error::{KilnError, Result};
use crate::gpu::arena::{Arena, ArenaSplit};
use crate::gpu::kernels::{self, Launch};
use crate::gpu::matmul_tiles::TileConfig;
use crate::gpu::{
    BufferRange, Dispatch, GpuContext, MapReceiver, Recorded, RecordedCopies, Timestamps,
    encode_pass, map_read, wait_mapped,
};
use crate::model::{ParamLayout, Sequential};
use crate::ops::Loss;
use crate::optim::{Hyper, NO_SKIP, Optimizer, Scalars, UpdateUniform};
use kiln_schedule::Needs;

pub struct GpuStep {
    ctx: Arc<GpuContext>,
    input_width: usize,
    widths: Vec<usize>,
    loss: Loss,
    optimizer: Optimizer,
    scalars: Scalars,
    no_decay_count: u32,
    /// How the arenas split into buffers and bindings on this device.
    split: ArenaSplit,
    params: Arena,
    /// The optimizer's state blocks in its binding order.
    state: Vec<StateBuffer>,
    param_len: usize,
    input: wgpu::Buffer,
    targets: wgpu::Buffer,
    acts: Vec<wgpu::Buffer>,
    /// Every instruction of the step program with its recorded launches; the first
    /// `forward_len` are the forward pass.
    step: Vec<(Instr, Recording)>,
    /// The tile shape each instruction's product was recorded with (`None`: not a product).
    tiles: Vec<Option<TileConfig>>,
    /// Updates recorded but not yet submitted, and the launches that differ between them.
    queued: Mutex<Queued>,
    /// Resident-data updates queued before one submission (1: each submitted at once).
    steps_per_submit: usize,
    forward_len: usize,
    /// The batch the buffers were sized for (and each product's tile shape chosen for).
    max_batch: usize,
    history: wgpu::Buffer,
    /// ‖g‖² of every step, slot for slot with `history`.
    grad_norm_history: wgpu::Buffer,
    /// Whether the program computes ‖g‖².
    with_norm: bool,
    /// Staging buffers that carry each step's observations back, when a schedule needs them.
    observations: Vec<ObservationSlot>,
    updates: u64,
    /// Leave parameters alone on updates whose loss is not finite.
    pub skip_non_finite: bool,
    /// Batch size the batch-dependent uniforms currently hold.
    batch: usize,
    /// Losses already read back, and how many more wait in `history`.
    losses: Vec<f32>,
    pending: usize,
    /// A data set resident on the device (`Trainer::load_data`).
    data: Option<ResidentData>,
    /// Validation rows resident on the device (`Trainer::load_validation`).
    validation: Option<ResidentValidation>,
}

/// Rows to predict on the device, and room for every output so that one read brings them
/// all back.
struct ResidentValidation {
    x: wgpu::Buffer,
    outputs: wgpu::Buffer,
    rows: usize,
}

/// A data set on the device and the two gathers that start each step taken from it.
struct ResidentData {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    order: wgpu::Buffer,
    /// Order entries the buffer holds.
    order_capacity: usize,
    /// Rows `x` and `y` hold.
    rows_capacity: usize,
    x_cols: usize,
    y_cols: usize,
}

/// How an instruction of the step program is recorded.
enum Recording {
    /// Once: its uniforms change only with the batch size (`GpuStep::set_batch`).
    Shared(Vec<Recorded>),
    /// In every copy of `Queued::program`, as launches `range` of a copy: its uniforms
    /// change every update (history slot, the optimizer's scalars).
    PerUpdate(std::ops::Range<usize>),
}

/// An optimizer state block: an arena, or a one-element placeholder where this configuration
/// does not use the block (the kernel keeps its binding).
#[derive(Clone)]
enum StateBuffer {
    Used(Arena),
    Unused(wgpu::Buffer),
}

impl StateBuffer {
    fn chunk(&self, chunk: &std::ops::Range<usize>) -> BufferRange<'_> {
        match self {
            StateBuffer::Used(arena) => arena.chunk(chunk),
            StateBuffer::Unused(placeholder) => placeholder.into(),
        }
    }
}

/// Partials each chunk of the gradient norm's first pass may write (`kernels::norm_groups`
/// is at most this).
const PARTIALS_PER_CHUNK: usize = 256;

/// Whether an instruction's uniforms change with every update.
fn per_update(instr: &Instr) -> bool {
    matches!(
        instr,
        Instr::Loss { .. } | Instr::GradNorm | Instr::Clip { .. } | Instr::Update
    )
}

/// Updates recorded for the next submission: update `k` of them uses copy `k` of the
/// per-update launches.
struct Queued {
    program: RecordedCopies,
    /// The two gathers (x, then targets) of a resident-data update, when data is loaded.
    gathers: Option<RecordedCopies>,
    count: usize,
    /// Whether the queued updates gather their batches on the device (else the host wrote
    /// the one queued update's batch).
    resident: bool,
    /// How to time the next submission, when a profile was asked for; then what it timed.
    profile: Option<(ProfileMode, Timestamps)>,
    profiled: Option<Profiled>,
}

/// A submission timed for a profile: what each pair of timestamps was around.
struct Profiled {
    timestamps: Timestamps,
    parts: Vec<KernelTime>,
}

/// An update's dispatches for one instruction of the step (or, with no instruction, the
/// gathers of a resident batch): those recorded once, then those of the update's own copy.
struct LaunchGroup<'a> {
    /// The instruction, with its place in the step.
    instr: Option<(usize, &'a Instr)>,
    shared: &'a [Recorded],
    per_update: &'a [Dispatch],
}

impl<'a> LaunchGroup<'a> {
    fn dispatches(&self) -> impl Iterator<Item = &'a Dispatch> + use<'a> {
        self.shared
            .iter()
            .map(|r| &r.dispatch)
            .chain(self.per_update)
    }
}

/// The most updates one submission carries; `Trainer::set_steps_per_submit` picks up to this.
pub const MAX_STEPS_PER_SUBMIT: usize = 64;
/// Updates per submission unless told otherwise.
pub const DEFAULT_STEPS_PER_SUBMIT: usize = 16;

/// One staging buffer of the ring that brings (loss, ‖g‖²) of a step back without a blocking
/// read: filled by a copy in the step's own submission, mapped asynchronously, read two steps
/// later (by then the GPU has the next step queued, so waiting never idles it).
struct ObservationSlot {
    buffer: wgpu::Buffer,
    /// Receives the map callback's result. Whichever thread polls the device runs the
    /// callback, so the reader waits on this rather than assuming its own poll ran it.
    mapped: Option<MapReceiver>,
    submission: Option<wgpu::SubmissionIndex>,
    update: u64,
    /// What was read, once read: asked again (the trainer re-reads an update's numbers after
    /// an error on them), it gives the same, as the CPU device does.
    read: Option<Observation>,
}

const OBSERVATION_RING: usize = 3;

/// Everything a recorded program binds, in one place.
struct Buffers<'a> {
    input: &'a wgpu::Buffer,
    targets: &'a wgpu::Buffer,
    terms: &'a wgpu::Buffer,
    acts: &'a [wgpu::Buffer],
    act_grads: &'a [wgpu::Buffer],
    params: &'a Arena,
    grads: &'a Arena,
    state: &'a [StateBuffer],
    chunks: &'a [std::ops::Range<usize>],
    no_decay: &'a wgpu::Buffer,
    partials: Option<&'a wgpu::Buffer>,
    /// The bias gradients' sums per part of the batch, between their two passes (none when
    /// every bias gradient takes one).
    bias_sums: Option<&'a wgpu::Buffer>,
    /// The partial products of the products that split k, between their two launches (none
    /// when no product splits).
    split_k_partials: Option<&'a wgpu::Buffer>,
    history: &'a wgpu::Buffer,
    grad_norm_history: &'a wgpu::Buffer,
}

impl Buffers<'_> {
    fn bind(&self, slot: Slot) -> BufferRange<'_> {
        match slot {
            Slot::Input => self.input.into(),
            Slot::Act(i) => (&self.acts[i]).into(),
            Slot::ActGrad(i) => (&self.act_grads[i]).into(),
            Slot::Param { offset, len } => self.params.range(offset, len),
            Slot::Grad { offset, len } => self.grads.range(offset, len),
        }
    }

    /// The buffers of each launch of `instr` recorded at `max_batch`, in the order of
    /// [`GpuStep::launches`].
    /// `placeholder` is bound where a matmul writes no activation: a buffer of its own, as a
    /// writable binding shared between launches would order launches that are independent.
    fn of<'b>(
        &'b self,
        ctx: &'b GpuContext,
        instr: &Instr,
        launches: &[Launch],
        max_batch: usize,
        placeholder: &'b wgpu::Buffer,
    ) -> Vec<Vec<BufferRange<'b>>> {
        match *instr {
            Instr::Matmul {
                a,
                b,
                bias,
                c,
                m,
                n,
                k,
                epilogue,
                ..
            } => {
                // The bias's binding carries V for a fused activation gradient.
                let (bias, y) = match epilogue {
                    Epilogue::None => (bias, None),
                    Epilogue::Activation { y, .. } => (bias, Some(y)),
                    Epilogue::ActivationGrad { act, x, y, .. } => {
                        (Some(if act.grad_reads_output() { y } else { x }), None)
                    }
                };
                kernels::matmul_bindings(
                    launches,
                    Instr::matmul_dims(m, n, k, max_batch),
                    self.bind(a),
                    self.bind(b),
                    bias.map(|s| self.bind(s)),
                    self.bind(c),
                    y.map_or(placeholder.into(), |y| self.bind(y)),
                    self.split_k_partials.map(Into::into),
                    ctx.dummy(),
                )
            }
            Instr::BiasGrad { dy, db, .. } => kernels::bias_grad_bindings(
                launches,
                self.bind(dy),
                self.bias_sums.map(Into::into),
                self.bind(db),
            ),
            Instr::ActForward { x, y, .. } => vec![vec![self.bind(x), self.bind(y)]],
            Instr::ActBackward { x, y, dy, dx, .. } => vec![vec![
                self.bind(x),
                self.bind(y),
                self.bind(dy),
                self.bind(dx),
            ]],
            Instr::Loss { last, .. } => vec![
                vec![
                    (&self.acts[last]).into(),
                    self.targets.into(),
                    self.terms.into(),
                    (&self.act_grads[last]).into(),
                ],
                vec![self.terms.into(), self.history.into()],
            ],
            // Whole-arena kernels: one launch per chunk (see `crate::gpu::arena`).
            Instr::GradNorm => {
                let partials = self.partials.expect("partials exist with GradNorm");
                let mut b: Vec<Vec<BufferRange<'_>>> = self
                    .chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let at = i * PARTIALS_PER_CHUNK;
                        let written = kernels::norm_groups(c.len());
                        vec![
                            self.grads.chunk(c),
                            BufferRange::f32s(partials, at, written),
                        ]
                    })
                    .collect();
                b.push(vec![partials.into(), self.grad_norm_history.into()]);
                b
            }
            Instr::Clip { .. } => self
                .chunks
                .iter()
                .map(|c| vec![self.grads.chunk(c), self.grad_norm_history.into()])
                .collect(),
            Instr::Update => self
                .chunks
                .iter()
                .map(|c| {
                    kernels::update_bindings(
                        self.params.chunk(c),
                        self.grads.chunk(c),
                        self.history,
                        self.no_decay,
                        self.state.iter().map(|s| s.chunk(c)),
                    )
                })
                .collect(),
        }
    }
}

/// Floats of the one buffer every bias gradient of `program`'s step sums its parts into at
/// `max_batch` rows (the pass that reads it runs before the next bias gradient writes it);
/// `None` where every bias gradient is one part.
pub(super) fn bias_sums_len(program: &Program, max_batch: usize) -> Option<usize> {
    let parts = kernels::bias_parts(max_batch);
    program
        .step
        .iter()
        .filter_map(|instr| match *instr {
            Instr::BiasGrad { cols, .. } if parts > 1 => Some(parts * cols),
            _ => None,
        })
        .max()
}

/// Floats of the one buffer the partial products of every product of `program`'s step that
/// splits k share at `max_batch` rows, `tiles` the step's tile per instruction; `None` where
/// none splits.
pub(super) fn split_k_partials_len(
    program: &Program,
    tiles: &[Option<TileConfig>],
    max_batch: usize,
) -> Option<usize> {
    program
        .step
        .iter()
        .zip(tiles)
        .filter_map(|(instr, tile)| match (*instr, tile) {
            (Instr::Matmul { m, n, k, .. }, Some(tile)) => Some(kernels::matmul_scratch_len(
                Instr::matmul_dims(m, n, k, max_batch),
                *tile,
            )),
            _ => None,
        })
        .max()
        .filter(|&len| len > 0)
}

impl GpuStep {
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Sequential,
        layout: &ParamLayout,
        program: Program,
        options: &TrainOptions,
        params: &[f32],
        needs: Needs,
    ) -> Result<Self> {
        let align = ctx.limits().min_storage_buffer_offset_alignment as usize;
        debug_assert!(
            (super::PARAM_ALIGN * 4).is_multiple_of(align),
            "WebGPU caps the alignment at 256 bytes"
        );
        let max_batch = options.max_batch;
        // Each product's tile shape chosen (and on a GPU tuned) before anything is allocated:
        // the tuner's own operands are gone by the time the model's buffers take the memory.
        // Kept with the step: its pipelines are compiled for these shapes, whatever the
        // context chooses later. The step begins with the forward pass's products.
        let tiles = program
            .step
            .iter()
            .map(|instr| match *instr {
                Instr::Matmul { t, m, n, k, .. } => ctx
                    .matmul_tile(Instr::matmul_dims(m, n, k, max_batch), t)
                    .map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        // Kernels a driver would cut short (lavapipe's loop cap) are refused before anything
        // is allocated.
        for (instr, tile) in program.step.iter().zip(&tiles) {
            let loops = match (*instr, tile) {
                (Instr::Matmul { m, n, k, .. }, Some(tile)) => {
                    kernels::matmul_loops(Instr::matmul_dims(m, n, k, max_batch), *tile)
                }
                (Instr::ActForward { act, cols, .. }, _) => {
                    kernels::activation_loops(act, cols, false)
                }
                (Instr::ActBackward { act, cols, .. }, _) => {
                    kernels::activation_loops(act, cols, true)
                }
                (Instr::Loss { cols, .. }, _) => {
                    kernels::loss_loops(model.loss(), max_batch * cols, cols)
                }
                (Instr::BiasGrad { .. }, _) => kernels::bias_loops(max_batch),
                _ => continue,
            };
            ctx.check_loops(loops)?;
        }
        let widths = model.widths();
        let last = widths.len() - 1;
        let out = widths[last];
        let optimizer = options.optimizer.clone();

        let split = ArenaSplit::on(&ctx, layout)?;
        let params_buf = Arena::upload(&ctx, "parameters", &split, params)?;
        let grads = Arena::filled(&ctx, "gradients", &split, 0.0)?;
        let state = optimizer
            .state_blocks()
            .iter()
            .map(|b| {
                Ok(if b.used {
                    StateBuffer::Used(Arena::filled(&ctx, b.name, &split, b.init)?)
                } else {
                    StateBuffer::Unused(ctx.storage_buffer(b.name, 1)?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ranges = optimizer.no_decay_ranges(layout);
        let no_decay = if ranges.is_empty() {
            ctx.storage_buffer("no-decay ranges", 2)?
        } else {
            ctx.upload("no-decay ranges", &ranges)?
        };
        let input = ctx.storage_buffer("input batch", max_batch * model.input())?;
        let targets = ctx.storage_buffer("targets", max_batch * out)?;
        let acts = (0..widths.len())
            .map(|i| ctx.storage_buffer(&format!("layer {i} output"), max_batch * widths[i]))
            .collect::<Result<Vec<_>>>()?;
        let act_grads = (0..widths.len())
            .map(|i| {
                ctx.storage_buffer(&format!("layer {i} output gradient"), max_batch * widths[i])
            })
            .collect::<Result<Vec<_>>>()?;
        let terms = ctx.storage_buffer("loss terms", max_batch * out)?;
        let history = ctx.storage_buffer("loss history", LOSS_HISTORY)?;
        let grad_norm_history = ctx.storage_buffer("gradient norm history", LOSS_HISTORY)?;
        let with_norm = program.step.contains(&Instr::GradNorm);
        let partials = match split.chunks() {
            _ if !with_norm => None,
            [one] => {
                Some(ctx.storage_buffer("gradient norm partials", kernels::norm_groups(one.len()))?)
            }
            chunks => Some(
                ctx.storage_buffer("gradient norm partials", chunks.len() * PARTIALS_PER_CHUNK)?,
            ),
        };
        let bias_sums = bias_sums_len(&program, max_batch)
            .map(|len| ctx.storage_buffer("bias gradient sums", len))
            .transpose()?;
        let split_k_partials = split_k_partials_len(&program, &tiles, max_batch)
            .map(|len| ctx.storage_buffer("split-k partial products", len))
            .transpose()?;
        let buffers = Buffers {
            input: &input,
            targets: &targets,
            terms: &terms,
            acts: &acts,
            act_grads: &act_grads,
            params: &params_buf,
            grads: &grads,
            state: &state,
            chunks: split.chunks(),
            no_decay: &no_decay,
            partials: partials.as_ref(),
            bias_sums: bias_sums.as_ref(),
            split_k_partials: split_k_partials.as_ref(),
            history: &history,
            grad_norm_history: &grad_norm_history,
        };
        let mut gpu_step = GpuStep {
            input_width: model.input(),
            loss: model.loss(),
            scalars: optimizer.rule().initial_scalars(),
            no_decay_count: ranges.len() as u32,
            optimizer,
            param_len: params.len(),
            split: split.clone(),
            params: params_buf.clone(),
            state: state.clone(),
            input: input.clone(),
            targets: targets.clone(),
            acts: acts.clone(),
            step: Vec::new(),
            // Replaced below, once the launches can be computed.
            queued: Mutex::new(Queued {
                program: RecordedCopies::new(&ctx, "kiln.per-update", &[], &[], 0)?,
                gathers: None,
                count: 0,
                resident: false,
                profile: None,
                profiled: None,
            }),
            steps_per_submit: DEFAULT_STEPS_PER_SUBMIT,
            forward_len: program.forward.len(),
            history: history.clone(),
            grad_norm_history: grad_norm_history.clone(),
            with_norm,
            observations: Vec::new(),
            updates: 0,
            skip_non_finite: false,
            batch: max_batch,
            max_batch,
            losses: Vec::new(),
            pending: 0,
            data: None,
            validation: None,
            widths,
            tiles,
            ctx: ctx.clone(),
        };
        let mut step = Vec::with_capacity(program.step.len());
        let (mut per_update_launches, mut per_update_buffers) = (Vec::new(), Vec::new());
        // One tiny placeholder per instruction (the bind groups keep them alive).
        let placeholders = (0..program.step.len())
            .map(|_| ctx.storage_buffer("unused output", 4))
            .collect::<Result<Vec<_>>>()?;
        for (i, (instr, placeholder)) in program.step.iter().zip(&placeholders).enumerate() {
            let launches = gpu_step.launches(i, instr, max_batch, 0, &UpdateUniform::default())?;
            let bound = buffers.of(&ctx, instr, &launches, max_batch, placeholder);
            let recording = if per_update(instr) {
                let first = per_update_launches.len();
                per_update_launches.extend(launches);
                per_update_buffers.extend(bound);
                Recording::PerUpdate(first..per_update_launches.len())
            } else {
                Recording::Shared(ctx.record_each(&launches, &bound))
            };
            step.push((*instr, recording));
        }
        gpu_step.step = step;
        gpu_step.queued.get_mut().expect("not shared yet").program = RecordedCopies::new(
            &ctx,
            "kiln.per-update",
            &per_update_launches,
            &per_update_buffers,
            MAX_STEPS_PER_SUBMIT,
        )?;
        if needs.any() {
            gpu_step.observations = (0..OBSERVATION_RING)
                .map(|_| ObservationSlot {
                    buffer: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("kiln.observation"),
                        size: 8,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    mapped: None,
                    submission: None,
                    update: 0,
                    read: None,
                })
                .collect();
        }
        ctx.check_errors()?;
        Ok(gpu_step)
    }

    pub fn context(&self) -> Arc<GpuContext> {
        self.ctx.clone()
    }

    pub fn device_name(&self) -> String {
        self.ctx.name()
    }

    fn output_width(&self) -> usize {
        *self.widths.last().expect("a model has layers")
    }

    /// The launches of instruction `i` at a batch size, writing into history slot `slot`;
    /// `update` is the optimizer's uniform block. A matmul's tile shape is the one it was
    /// recorded with (chosen for `max_batch`), whatever the batch, so a short last batch keeps
    /// the recorded pipeline.
    fn launches(
        &self,
        i: usize,
        instr: &Instr,
        batch: usize,
        slot: u32,
        update: &UpdateUniform,
    ) -> Result<Vec<Launch>> {
        let max_dim = self.ctx.max_dim();
        Ok(match *instr {
            Instr::Matmul {
                t,
                bias,
                m,
                n,
                k,
                epilogue,
                ..
            } => {
                let tile = self.tiles[i].ok_or_else(|| {
                    KilnError::Gpu(format!("internal: product {i} has no recorded tile"))
                })?;
                let launches = kernels::matmul(
                    t,
                    Instr::matmul_dims(m, n, k, batch),
                    Instr::matmul_dims(m, n, k, self.max_batch),
                    bias.is_some(),
                    tile,
                    max_dim,
                )?;
                match epilogue {
                    Epilogue::None => launches,
                    Epilogue::Activation { act, .. } => kernels::fuse_activation(launches, act),
                    Epilogue::ActivationGrad { act, .. } => {
                        kernels::fuse_activation_grad(launches, act)
                    }
                }
            }
            Instr::BiasGrad { cols, .. } => {
                kernels::bias_grad(batch, cols, self.max_batch, max_dim)?
            }
            Instr::ActForward { act, cols, .. } => {
                vec![kernels::activation_forward(
                    act,
                    batch * cols,
                    cols,
                    max_dim,
                )]
            }
            Instr::ActBackward { act, cols, .. } => {
                vec![kernels::activation_backward(
                    act,
                    batch * cols,
                    cols,
                    max_dim,
                )]
            }
            Instr::Loss { cols, .. } => {
                let (terms, reduce) = kernels::loss(self.loss, batch * cols, cols, slot, max_dim);
                vec![terms, reduce]
            }
            // Whole-arena kernels: one launch per chunk (see `crate::gpu::arena`).
            Instr::GradNorm => match self.split.chunks() {
                [one] => {
                    let (partial, last) = kernels::sum_squares(one.len(), slot);
                    vec![partial, last]
                }
                chunks => {
                    let mut l: Vec<Launch> = chunks
                        .iter()
                        .map(|c| kernels::sum_squares(c.len(), slot).0)
                        .collect();
                    // Unwritten partials stay 0 and add nothing.
                    l.push(kernels::sum_squares_final(
                        chunks.len() * PARTIALS_PER_CHUNK,
                        slot,
                    ));
                    l
                }
            },
            Instr::Clip { max_norm } => self
                .split
                .chunks()
                .iter()
                .map(|c| kernels::clip(c.len(), slot, max_norm, max_dim))
                .collect(),
            Instr::Update => self
                .split
                .chunks()
                .iter()
                .map(|c| {
                    let chunk = UpdateUniform {
                        len: c.len() as u32,
                        base: c.start as u32,
                        ..*update
                    };
                    kernels::update(self.optimizer.rule().kernel(), &chunk, max_dim)
                })
                .collect(),
        })
    }

    /// Rewrites the uniforms and grids that depend on the batch size, if it changed. Queued
    /// updates are submitted first: they were recorded for the batch size before.
    fn set_batch(&mut self, batch: usize) -> Result<()> {
        if batch == self.batch {
            return Ok(());
        }
        self.submit_queued()?;
        let no_update = UpdateUniform::default();
        for i in 0..self.step.len() {
            let Recording::Shared(recorded) = &self.step[i].1 else {
                continue;
            };
            let launches = self.launches(i, &self.step[i].0, batch, 0, &no_update)?;
            debug_assert_eq!(recorded.len(), launches.len());
            let Recording::Shared(recorded) = &mut self.step[i].1 else {
                unreachable!("checked above")
            };
            for (rec, l) in recorded.iter_mut().zip(launches) {
                rec.relaunch(&self.ctx.queue, &l);
            }
        }
        self.batch = batch;
        Ok(())
    }

    /// Writes a batch from the host into the batch buffers, for the next update; with `what`,
    /// checks `x`'s values are finite as they are copied (an error names `what`). Whatever
    /// is queued is submitted first: resident updates gather into the same buffers.
    pub fn upload_batch(
        &mut self,
        x: &[f32],
        targets: crate::ops::Targets,
        what: Option<&str>,
    ) -> Result<()> {
        self.submit_queued()?;
        match what {
            Some(what) => self.ctx.write_finite(&self.input, x, what)?,
            None => self.ctx.write(&self.input, x)?,
        }
        self.ctx
            .write(&self.targets, &kernels::targets_as_f32(targets))
    }

    /// How many resident-data updates to queue before submitting them together (1 to
    /// [`MAX_STEPS_PER_SUBMIT`]).
    pub fn set_steps_per_submit(&mut self, n: usize) -> Result<()> {
        self.submit_queued()?;
        self.steps_per_submit = n.clamp(1, MAX_STEPS_PER_SUBMIT);
        Ok(())
    }

    /// Uploads a data set once; steps from it gather their rows on the device.
    pub fn load_data(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<()> {
        self.submit_queued()?;
        let (x_cols, y_cols) = (x.len() / rows, y.len() / rows);
        if let Some(d) = &self.data
            && (d.x_cols, d.y_cols) == (x_cols, y_cols)
            && d.rows_capacity >= rows
        {
            // The next window of a streamed data set: written over the last, in place. The
            // updates submitted before read the last; the write lands after them.
            self.ctx.write(&d.x, x)?;
            self.ctx.write(&d.y, y)?;
            return Ok(());
        }
        let x_buf = self.ctx.upload("resident data x", x)?;
        let y_buf = self.ctx.upload("resident data targets", y)?;
        // Room for an order of every row; `set_order` makes a larger one if needed.
        let order = self.ctx.storage_buffer("batch order", rows)?;
        self.record_gathers(ResidentData {
            x: x_buf,
            y: y_buf,
            order,
            order_capacity: rows,
            rows_capacity: rows,
            x_cols,
            y_cols,
        })
    }

    /// Uploads rows to predict on (a validation split) once; see `predict_validation`.
    pub fn load_validation(&mut self, x: &[f32], rows: usize) -> Result<()> {
        // Dropped first: the new buffers may need its memory.
        self.validation = None;
        let (x, outputs) = self.rows_to_predict("validation rows", x, rows)?;
        self.validation = Some(ResidentValidation { x, outputs, rows });
        Ok(())
    }

    /// `x` (rows × input) uploaded, and room for its outputs. Both are only copied to and
    /// from, never bound: held to max_buffer_size, not the binding limit.
    fn rows_to_predict(
        &self,
        what: &str,
        x: &[f32],
        rows: usize,
    ) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
        let outputs = rows
            .checked_mul(self.output_width())
            .ok_or_else(|| KilnError::shape(what, format!("{rows} rows")))?;
        let outputs = self
            .ctx
            .arena_buffer(&format!("{what}: outputs"), outputs)?;
        let x_buf = self.ctx.arena_buffer(what, x.len())?;
        self.ctx.write(&x_buf, x)?;
        Ok((x_buf, outputs))
    }

    /// The model's outputs for the loaded validation rows (see `predict_rows`).
    pub fn predict_validation(&mut self) -> Result<Vec<f32>> {
        let v = self
            .validation
            .as_ref()
            .expect("the trainer checks validation rows are loaded");
        let (x, outputs, rows) = (v.x.clone(), v.outputs.clone(), v.rows);
        self.predict_rows(&x, &outputs, rows)
    }

    /// The model's outputs for `x` (rows × input, more than `max_batch` rows) in one go: the
    /// rows uploaded in one write and predicted as `predict_rows` does. Errs with `OverLimit`
    /// where the rows do not fit one buffer (the caller then predicts batch by batch).
    pub fn predict_all(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (x, outputs) = self.rows_to_predict("prediction input", x, rows)?;
        self.predict_rows(&x, &outputs, rows)
    }

    /// The model's outputs for `rows` rows held in `x` on the device, into `outputs` and read
    /// back in one transfer. Chunks of `max_batch` rows as `predict` takes them (so the same
    /// numbers): each chunk copied into the input buffer, the forward pass, its outputs copied
    /// out; all full chunks in one submission.
    fn predict_rows(
        &mut self,
        x: &wgpu::Buffer,
        outputs: &wgpu::Buffer,
        rows: usize,
    ) -> Result<Vec<f32>> {
        self.submit_queued()?;
        let (input, out) = (self.input_width as u64 * 4, self.output_width() as u64 * 4);
        let full = rows / self.max_batch;
        let chunks = [
            (0..full, self.max_batch),
            (
                full..full + usize::from(!rows.is_multiple_of(self.max_batch)),
                rows % self.max_batch,
            ),
        ];
        for (range, batch) in chunks {
            if range.is_empty() {
                continue;
            }
            self.set_batch(batch)?;
            let last = &self.acts[self.acts.len() - 1];
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            for c in range {
                let (at, n) = ((c * self.max_batch) as u64, batch as u64);
                encoder.copy_buffer_to_buffer(x, at * input, &self.input, 0, n * input);
                encode_pass(&mut encoder, self.forward());
                encoder.copy_buffer_to_buffer(last, 0, outputs, at * out, n * out);
            }
            self.ctx.submit_encoder(encoder)?;
        }
        self.ctx.read_back(outputs, 0, rows * self.output_width())
    }

    /// The forward pass's dispatches.
    fn forward(&self) -> impl Iterator<Item = &Dispatch> {
        self.step[..self.forward_len]
            .iter()
            .flat_map(|(_, r)| match r {
                Recording::Shared(recorded) => recorded.iter().map(|r| &r.dispatch),
                Recording::PerUpdate(_) => unreachable!("the forward pass is shared"),
            })
    }

    /// Keeps `data` as the resident data, with its two gathers recorded once per queue slot;
    /// on an error, the data before stays.
    fn record_gathers(&mut self, data: ResidentData) -> Result<()> {
        let max_dim = self.ctx.max_dim();
        let launches = [data.x_cols, data.y_cols]
            .map(|cols| kernels::gather(0, self.max_batch, cols, max_dim));
        let buffers = [(&data.x, &self.input), (&data.y, &self.targets)]
            .map(|(src, dst)| vec![src.into(), (&data.order).into(), dst.into()]);
        let gathers = RecordedCopies::new(
            &self.ctx,
            "kiln.gathers",
            &launches,
            &buffers,
            MAX_STEPS_PER_SUBMIT,
        )?;
        self.queued
            .get_mut()
            .expect("the queue lock is never poisoned")
            .gathers = Some(gathers);
        self.data = Some(data);
        Ok(())
    }

    /// The order steps take rows in, uploaded once for all of them.
    pub fn set_order(&mut self, order: &[u32]) -> Result<()> {
        const LOADED: &str = "the trainer checks data is loaded";
        // Queued updates read the order they were queued with.
        self.submit_queued()?;
        let capacity = self.data.as_ref().expect(LOADED).order_capacity;
        if order.len() > capacity {
            // Allocated before the data is touched: if it fails, the last order still stands.
            // The data is replaced only once the new gathers are recorded.
            let buffer = self.ctx.storage_buffer("batch order", order.len())?;
            let data = self.data.as_ref().expect(LOADED);
            self.record_gathers(ResidentData {
                x: data.x.clone(),
                y: data.y.clone(),
                order: buffer,
                order_capacity: order.len(),
                rows_capacity: data.rows_capacity,
                x_cols: data.x_cols,
                y_cols: data.y_cols,
            })?;
        }
        let data = self.data.as_ref().expect(LOADED);
        self.ctx
            .queue
            .write_buffer(&data.order, 0, bytemuck::cast_slice(order));
        Ok(())
    }

    pub fn step(&mut self, source: super::Batch<'_>, batch: usize, hyper: Hyper) -> Result<()> {
        if self.pending == LOSS_HISTORY {
            self.flush_losses()?;
        }
        self.set_batch(batch)?;
        let resident = matches!(source, super::Batch::Resident { .. });
        if let super::Batch::Host { .. } = source {
            // `Trainer` uploads a host batch before the update (`upload_batch`).
            return Err(KilnError::Gpu(
                "internal: a host batch reached the GPU step before its upload".into(),
            ));
        }
        let slot = self.pending as u32;
        let update = UpdateUniform {
            len: self.param_len as u32,
            skip_slot: if self.skip_non_finite { slot } else { NO_SKIP },
            no_decay_count: self.no_decay_count,
            // Set per chunk by `launches`.
            base: 0,
            scalars: self.optimizer.rule().scalars(hyper, &mut self.scalars)?,
        };
        let per_update_launches = self
            .step
            .iter()
            .enumerate()
            .filter_map(|(i, (instr, r))| match r {
                Recording::PerUpdate(range) => Some((i, instr, range.clone())),
                Recording::Shared(_) => None,
            })
            .map(|(i, instr, range)| Ok((range, self.launches(i, instr, batch, slot, &update)?)))
            .collect::<Result<Vec<_>>>()?;
        let max_dim = self.ctx.max_dim();
        let queued = self
            .queued
            .get_mut()
            .expect("the queue lock is never poisoned");
        let copy = queued.count;
        for (range, launches) in per_update_launches {
            for (j, l) in range.zip(&launches) {
                queued.program.set(copy, j, l);
            }
        }
        match source {
            super::Batch::Host { .. } | super::Batch::Uploaded => {}
            super::Batch::Resident { start } => {
                let data = self
                    .data
                    .as_ref()
                    .expect("the trainer checks data is loaded");
                let gathers = queued
                    .gathers
                    .as_mut()
                    .expect("gathers are recorded with the data");
                for (j, cols) in [data.x_cols, data.y_cols].into_iter().enumerate() {
                    gathers.set(copy, j, &kernels::gather(start, batch, cols, max_dim));
                }
            }
        }
        queued.count += 1;
        queued.resident = resident;
        // A profiled update goes to the GPU alone.
        let profiled = queued.profile.is_some();
        self.pending += 1;
        self.updates += 1;

        // Observation-driven schedules read each update's numbers back: it goes at once, with
        // the copy into the observation ring behind it.
        let ring = self.observations.len();
        if ring > 0 {
            let update_index = self.updates - 1;
            let i = update_index as usize % ring;
            let with_norm = self.with_norm;
            let (history, norms) = (&self.history, &self.grad_norm_history);
            let target = &self.observations[i].buffer;
            let index = self
                .submit_queued_then(|encoder| {
                    let at = slot as u64 * 4;
                    encoder.copy_buffer_to_buffer(history, at, target, 0, 4);
                    if with_norm {
                        encoder.copy_buffer_to_buffer(norms, at, target, 4, 4);
                    }
                })?
                .expect("an update was queued");
            let o = &mut self.observations[i];
            o.mapped = Some(map_read(&o.buffer.slice(..)));
            o.submission = Some(index);
            o.update = update_index;
            o.read = None;
        } else if !resident || profiled || copy + 1 >= self.queue_capacity() {
            self.submit_queued()?;
        }
        Ok(())
    }

    /// How many updates may be queued: as asked, and as many as have their own copy of the
    /// per-update launches (fewer on a device with small buffers).
    fn queue_capacity(&self) -> usize {
        let queued = self
            .queued
            .lock()
            .expect("the queue lock is never poisoned");
        let gathers = queued.gathers.as_ref().map_or(usize::MAX, |g| g.count());
        self.steps_per_submit
            .min(queued.program.count())
            .min(gathers)
    }

    /// Submits the queued updates, if any.
    fn submit_queued(&self) -> Result<()> {
        self.submit_queued_then(|_| {}).map(|_| ())
    }

    /// Submits the queued updates in one compute pass with their uniforms in one write, and
    /// `after` recording more commands behind it; `None` if none were queued.
    fn submit_queued_then(
        &self,
        after: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let mut queued = self
            .queued
            .lock()
            .expect("the queue lock is never poisoned");
        if queued.count == 0 {
            return Ok(None);
        }
        let profile = queued.profile.take();
        let gathers = match (&queued.gathers, queued.resident) {
            (Some(g), true) => {
                g.upload(&self.ctx.queue, queued.count);
                Some(g)
            }
            (None, true) => unreachable!("resident updates are queued with data loaded"),
            (_, false) => None,
        };
        queued.program.upload(&self.ctx.queue, queued.count);
        let program = &queued.program;
        let groups = (0..queued.count).flat_map(|k| self.launch_groups(program, gathers, k));
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let profiled = match profile {
            None => {
                encode_pass(&mut encoder, groups.flat_map(|g| g.dispatches()));
                None
            }
            Some((mode, timestamps)) => {
                Some(self.encode_profiled(&mut encoder, groups, mode, timestamps))
            }
        };
        after(&mut encoder);
        let submitted = self.ctx.submit_encoder(encoder);
        // Gone to the GPU or failed there: either way they are no longer queued.
        queued.count = 0;
        // Only the first update after `profile_next` is timed; later ones keep its times.
        if profiled.is_some() {
            queued.profiled = profiled;
        }
        submitted.map(Some)
    }

    /// Update `k`'s launches in order: a resident batch's gathers, then each instruction's.
    fn launch_groups<'a>(
        &'a self,
        program: &'a RecordedCopies,
        gathers: Option<&'a RecordedCopies>,
        k: usize,
    ) -> impl Iterator<Item = LaunchGroup<'a>> + 'a {
        let gather = gathers.map(|g| LaunchGroup {
            instr: None,
            shared: &[],
            per_update: g.dispatches(k),
        });
        let step = self.step.iter().enumerate().map(move |(i, (instr, r))| {
            let (shared, per_update): (&[Recorded], &[Dispatch]) = match r {
                Recording::Shared(recorded) => (recorded, &[]),
                Recording::PerUpdate(range) => (&[], &program.dispatches(k)[range.clone()]),
            };
            LaunchGroup {
                instr: Some((i, instr)),
                shared,
                per_update,
            }
        });
        gather.into_iter().chain(step)
    }

    /// Records `groups` for a profile: each group in a pass of its own between timestamps
    /// (`Kernels`), or all in one pass between two (`Update`), with `timestamps` made for that.
    fn encode_profiled<'a>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        groups: impl Iterator<Item = LaunchGroup<'a>>,
        mode: ProfileMode,
        timestamps: Timestamps,
    ) -> Profiled {
        let parts = match mode {
            ProfileMode::Update => {
                timestamps.encode_pass(encoder, groups.flat_map(|g| g.dispatches()), 0);
                vec![KernelTime::new(WHOLE_UPDATE, 0.0)]
            }
            ProfileMode::Kernels => groups
                .enumerate()
                .map(|(pair, g)| {
                    timestamps.encode_pass(encoder, g.dispatches(), pair as u32);
                    self.part(g.instr)
                })
                .collect(),
        };
        timestamps.resolve(encoder, parts.len() as u32);
        Profiled { timestamps, parts }
    }

    /// A profile's entry for instruction `i` (`None`: the gathers), its time still to be read.
    fn part(&self, instr: Option<(usize, &Instr)>) -> KernelTime {
        let Some((i, instr)) = instr else {
            return KernelTime::new(GATHER, 0.0);
        };
        KernelTime::of(instr, self.batch, self.optimizer.name(), self.tiles[i], 0.0)
    }

    /// Times the next update as `mode` says (see `Trainer::profile`): what is queued goes
    /// first, and that update goes to the GPU alone.
    pub fn profile_next(&mut self, mode: ProfileMode) -> Result<()> {
        self.submit_queued()?;
        // Made now, so that the update itself cannot fail for want of them: a pair for each
        // instruction and the gathers, or one for the whole update.
        let pairs = match mode {
            ProfileMode::Kernels => self.step.len() + 1,
            ProfileMode::Update => 1,
        };
        let timestamps = self.ctx.timestamps(pairs)?;
        let queued = self
            .queued
            .get_mut()
            .expect("the queue lock is never poisoned");
        queued.profile = Some((mode, timestamps));
        queued.profiled = None;
        Ok(())
    }

    /// The times of the update profiled since `profile_next`, if one was submitted (waits
    /// for it).
    pub fn take_profile(&mut self) -> Result<Option<Vec<KernelTime>>> {
        let queued = self
            .queued
            .get_mut()
            .expect("the queue lock is never poisoned");
        queued.profile = None;
        let Some(Profiled { timestamps, parts }) = queued.profiled.take() else {
            return Ok(None);
        };
        let seconds = timestamps.read(&self.ctx, parts.len() as u32)?;
        Ok(Some(
            parts
                .into_iter()
                .zip(seconds)
                .map(|(part, seconds)| KernelTime { seconds, ..part })
                .collect(),
        ))
    }

    /// The loss (and ‖g‖², when computed) of update `update`, one of the last few. Waits only
    /// for that update's submission, not for the steps queued behind it.
    pub fn observation(&mut self, update: u64) -> Result<Observation> {
        let ring = self.observations.len().max(1);
        let Some(o) = self
            .observations
            .get_mut(update as usize % ring)
            .filter(|o| o.update == update)
        else {
            return Err(KilnError::Gpu(format!(
                "no observation was recorded for update {update}"
            )));
        };
        if let Some(read) = o.read {
            return Ok(read);
        }
        let Some(submission) = o.submission.take() else {
            return Err(KilnError::Gpu(format!(
                "no observation was recorded for update {update}"
            )));
        };
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| KilnError::Gpu(format!("waiting for update {update}: {e}")))?;
        self.ctx.check_errors()?;
        let receiver = o
            .mapped
            .take()
            .ok_or_else(|| KilnError::Gpu("observation buffer was not mapped".into()))?;
        wait_mapped(receiver, "reading observations")?;
        let values: [f32; 2] = {
            let view = o
                .buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|e| KilnError::Gpu(format!("reading observations: {e}")))?;
            bytemuck::pod_read_unaligned(&view[..8])
        };
        o.buffer.unmap();
        let read = Observation {
            loss: Some(values[0] as f64),
            grad_norm_sq: self.with_norm.then_some(values[1] as f64),
        };
        o.read = Some(read);
        Ok(read)
    }

    /// Reads the losses waiting in the GPU history back in one transfer.
    fn flush_losses(&mut self) -> Result<()> {
        self.submit_queued()?;
        let values = self.ctx.read_back(&self.history, 0, self.pending)?;
        self.losses.extend(values);
        self.pending = 0;
        Ok(())
    }

    pub fn losses(&mut self) -> Result<&[f32]> {
        self.flush_losses()?;
        Ok(&self.losses)
    }

    pub fn predict(&mut self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), batch * self.input_width);
        self.set_batch(batch)?;
        // Queued updates read the input buffer this overwrites.
        self.submit_queued()?;
        self.ctx
            .queue
            .write_buffer(&self.input, 0, bytemuck::cast_slice(x));
        self.ctx.submit(self.forward())?;
        let last = self.acts.len() - 1;
        self.ctx
            .read_back(&self.acts[last], 0, batch * self.output_width())
    }

    /// The optimizer's scalar state and every state block in its binding order (read back
    /// from the GPU; unused blocks empty).
    pub fn optimizer_state(&self) -> Result<OptimizerSnapshot> {
        self.submit_queued()?;
        let mut blocks = Vec::new();
        for buf in &self.state {
            blocks.push(match buf {
                StateBuffer::Used(arena) => arena.read(&self.ctx)?,
                StateBuffer::Unused(_) => Vec::new(),
            });
        }
        Ok((self.scalars.clone(), blocks))
    }

    /// Continues after `steps` updates of an earlier run with the optimizer state it had
    /// (every block in binding order, checked by the trainer; unused ones empty).
    pub fn restore(&mut self, scalars: Scalars, blocks: &[Vec<f32>], steps: u64) -> Result<()> {
        self.submit_queued()?;
        for (values, buf) in blocks.iter().zip(&self.state) {
            if let (StateBuffer::Used(arena), false) = (buf, values.is_empty()) {
                arena.write(&self.ctx, values)?;
            }
        }
        self.scalars = scalars;
        self.updates = steps;
        Ok(())
    }

    pub fn parameters(&self) -> Result<Vec<f32>> {
        self.submit_queued()?;
        self.params.read(&self.ctx)
    }

    pub fn set_parameters(&mut self, params: &[f32]) -> Result<()> {
        self.submit_queued()?;
        self.params.write(&self.ctx, params)
    }
}
