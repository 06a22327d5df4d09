//! `kiln bench`: matmul, every optimizer's update, a plain copy and whole training steps, timed on the
//! GPU and the CPU device side by side.
//!
//! GPU kernels are timed with timestamp queries around their compute pass when the adapter has
//! them, otherwise by wall time around submit + wait; training steps by wall time around
//! `Trainer::step` + wait (or a run of steps and one wait, see [`StepSource`]), with the host's
//! share (checking, uploading, recording and submitting) reported apart.
//! Every figure is the median of at least five runs after warm-up.

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::device::Device;
use crate::error::{KilnError, Result};
use crate::gpu::kernels::{self, Launch};
use crate::timing::{measure, median};
use std::sync::Arc;

use crate::gpu::matmul_tiles::TileConfig;
use crate::gpu::{BufferRange, GpuContext, Recorded};
use crate::model::{Layer, Sequential};
use crate::ops::{Activation, Loss, MatmulDims, Targets, Transpose};
use crate::optim::{self, Optimizer, UpdateRule};
use crate::schedule::Scheduler;
use crate::train::{ProfileMode, TrainOptions, Trainer};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    /// Square products and the three products of an MLP layer.
    Matmul,
    /// Every optimizer's fused update (SGD with momentum 0.9, the others at PyTorch's
    /// defaults); rows are named after the optimizer.
    Optimizers,
    /// Whole training steps of an MLP.
    TrainStep,
    /// A whole epoch of training from a data set resident on the device.
    Epoch,
    /// A plain copy kernel: the device's bandwidth.
    Copy,
    /// The training steps of [`BenchOp::TrainStep`] from resident data, kernel by kernel
    /// ([`Trainer::profile`]): where a step's time goes.
    Profile,
}

impl BenchOp {
    /// Every op, in report order.
    pub const ALL: [BenchOp; 6] = [
        BenchOp::Copy,
        BenchOp::Matmul,
        BenchOp::Optimizers,
        BenchOp::TrainStep,
        BenchOp::Profile,
        BenchOp::Epoch,
    ];

    /// The name used by `--ops`.
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Matmul => "matmul",
            BenchOp::Optimizers => "optimizers",
            BenchOp::TrainStep => "train_step",
            BenchOp::Epoch => "epoch",
            BenchOp::Copy => "copy",
            BenchOp::Profile => "profile",
        }
    }

    /// Parses an `--ops` name.
    pub fn from_name(name: &str) -> Result<BenchOp> {
        BenchOp::ALL
            .into_iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                KilnError::invalid(
                    "ops",
                    format!(
                        "unknown op {name:?}; ops: matmul, optimizers, train_step, profile, \
                         epoch, copy"
                    ),
                )
            })
    }
}

/// What one row measured, with its sizes.
#[derive(Clone, Debug, PartialEq)]
pub enum Measured {
    /// dst ← src over `floats` floats.
    Copy {
        /// Floats copied.
        floats: usize,
    },
    /// One product `C[M,N] = op(A)·op(B)`.
    Matmul {
        /// Its sizes.
        dims: MatmulDims,
        /// Which product.
        t: Transpose,
        /// "square", or which product of a dense layer ("layer forward", "layer dW", "layer dX").
        case: &'static str,
    },
    /// One fused optimizer update.
    Update {
        /// torch.optim's name of the optimizer.
        optimizer: &'static str,
        /// Parameters updated.
        params: usize,
    },
    /// One training step of an MLP, as [`StepSource`] says.
    TrainStep {
        /// Input width.
        input: usize,
        /// Width of each dense layer (ReLU between them).
        widths: Vec<usize>,
        /// Rows per step.
        batch: usize,
        /// Where its batch comes from, and whether the device is waited for after each step.
        source: StepSource,
    },
    /// One epoch of an MLP from a resident data set (`Trainer::load_data`): the reshuffle
    /// and every step, to the device's last.
    Epoch {
        /// Rows of the data set.
        rows: usize,
        /// Input width.
        input: usize,
        /// Width of each dense layer (ReLU between them).
        widths: Vec<usize>,
        /// Rows per step (the last smaller).
        batch: usize,
        /// Updates a GPU submits together (`Trainer::set_steps_per_submit`).
        steps_per_submit: usize,
    },
    /// One part of a resident training step of an MLP, timed on its own
    /// ([`crate::train::ProfileMode::Kernels`]); or the whole step in its one pass ("whole
    /// update"), or the sum of its parts' medians ("sum of kernels").
    Kernel {
        /// Input width.
        input: usize,
        /// Width of each dense layer (ReLU between them).
        widths: Vec<usize>,
        /// Rows per step.
        batch: usize,
        /// Which part ([`crate::train::KernelTime::kernel`]), with its place in the step
        /// ("03 matmul 256x1024x784 nt + relu").
        kernel: String,
    },
}

/// How a `train_step` row's steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepSource {
    /// "train_step": one `Trainer::step` with the batch from the host, then a wait for the
    /// device: the latency of one step.
    Host,
    /// "train_loop": a run of `Trainer::step` with the batch from the host and one wait at
    /// the end, per step: a training loop over host batches, where the host's upload of a
    /// batch can overlap the device's work on the one before.
    HostLoop,
    /// "resident_step": a run of `Trainer::step_data` on a batch resident on the device, per
    /// step (queued several per submission on a GPU).
    Resident,
}

impl StepSource {
    /// The row's op name.
    pub fn op(self) -> &'static str {
        match self {
            StepSource::Host => "train_step",
            StepSource::HostLoop => "train_loop",
            StepSource::Resident => "resident_step",
        }
    }
}

impl Measured {
    /// The op's name in reports: "copy", "matmul", the optimizer's name, "train_step".
    pub fn op(&self) -> &'static str {
        match self {
            Measured::Copy { .. } => "copy",
            Measured::Matmul { .. } => "matmul",
            Measured::Update { optimizer, .. } => optimizer,
            Measured::TrainStep { source, .. } => source.op(),
            Measured::Epoch { .. } => "epoch",
            Measured::Kernel { .. } => "profile",
        }
    }

    /// The sizes as reports (and `benches/pytorch_reference.py`) write them, e.g.
    /// "1024x1024x1024 nn (square)", "1000000 params", "784->1024->10 batch 256".
    pub fn shape(&self) -> String {
        match self {
            Measured::Copy { floats } => format!("{floats} floats"),
            Measured::Matmul { dims, t, case } => format!(
                "{}x{}x{} {} ({case})",
                dims.m,
                dims.n,
                dims.k,
                format!("{t:?}").to_lowercase()
            ),
            Measured::Update { params, .. } => format!("{params} params"),
            Measured::TrainStep {
                input,
                widths,
                batch,
                ..
            } => format!("{} batch {batch}", layers_text(*input, widths)),
            Measured::Kernel {
                input,
                widths,
                batch,
                kernel,
            } => format!("{} batch {batch}: {kernel}", layers_text(*input, widths)),
            Measured::Epoch {
                rows,
                input,
                widths,
                batch,
                steps_per_submit,
            } => {
                let shape = format!(
                    "{rows}x{input} {} batch {batch}",
                    layers_text(*input, widths)
                );
                // The default is what PyTorch's rows are held against; others are marked.
                if *steps_per_submit == crate::train::DEFAULT_STEPS_PER_SUBMIT {
                    shape
                } else {
                    format!("{shape}, {steps_per_submit} per submit")
                }
            }
        }
    }
}

/// "784->1024->10".
fn layers_text(input: usize, widths: &[usize]) -> String {
    std::iter::once(input)
        .chain(widths.iter().copied())
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("->")
}

/// The device a row ran on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchDevice {
    /// The CPU device.
    Cpu,
    /// A GPU adapter.
    Gpu {
        /// The adapter's name.
        adapter: String,
        /// Whether kernels kept wgpu's runtime bounds checks.
        bounds_checks: bool,
        /// Whether training steps ran each activation as a kernel of its own.
        separate_activations: bool,
    },
}

impl BenchDevice {
    fn of(device: &Device) -> Self {
        match device {
            Device::Cpu => BenchDevice::Cpu,
            Device::Gpu(ctx) => BenchDevice::Gpu {
                adapter: ctx.info().name.clone(),
                bounds_checks: ctx.bounds_checks(),
                separate_activations: !ctx.fuses_activations(),
            },
        }
    }

    /// "cpu", "gpu", "gpu+checks" (kernels with runtime bounds checks), "gpu+separate"
    /// (activations not fused into the products) or "gpu+checks+separate".
    pub fn kind(&self) -> &'static str {
        match self {
            BenchDevice::Cpu => "cpu",
            BenchDevice::Gpu {
                bounds_checks,
                separate_activations,
                ..
            } => match (bounds_checks, separate_activations) {
                (false, false) => "gpu",
                (true, false) => "gpu+checks",
                (false, true) => "gpu+separate",
                (true, true) => "gpu+checks+separate",
            },
        }
    }

    /// The adapter's name ("cpu" for the CPU device).
    pub fn adapter(&self) -> &str {
        match self {
            BenchDevice::Cpu => "cpu",
            BenchDevice::Gpu { adapter, .. } => adapter,
        }
    }
}

/// How a time was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// GPU timestamp queries around the compute pass.
    Timestamp,
    /// Wall time (around submit + wait on a GPU).
    Wall,
}

impl Timing {
    /// "timestamp" or "wall".
    pub fn name(self) -> &'static str {
        match self {
            Timing::Timestamp => "timestamp",
            Timing::Wall => "wall",
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// What was measured.
    pub measured: Measured,
    /// Where.
    pub device: BenchDevice,
    /// Median seconds per run.
    pub median_s: f64,
    /// Floating-point throughput, for compute-bound ops.
    pub gflops: Option<f64>,
    /// Memory throughput, for bandwidth-bound ops.
    pub gbps: Option<f64>,
    /// Percent of the FP32 peak (known adapters) or of the measured copy bandwidth
    /// (optimizer updates).
    pub pct_peak: Option<f64>,
    /// CPU time over GPU time for the same op and shape (filled in by [`compare`]).
    pub gpu_speedup: Option<f64>,
    /// Host seconds spent recording and submitting one GPU training step.
    pub host_s: Option<f64>,
    /// How the time was taken.
    pub timing: Timing,
    /// The matmul tile shape the GPU used (see [`crate::gpu::matmul_tiles`]).
    pub tiles: Option<TileConfig>,
}

/// The JSON row of `kiln bench --json`: every field as text or number, the op and shape as
/// [`Measured::op`] and [`Measured::shape`] write them.
impl serde::Serialize for BenchRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut r = s.serialize_struct("BenchRow", 12)?;
        r.serialize_field("op", self.measured.op())?;
        r.serialize_field("device", self.device.kind())?;
        r.serialize_field("adapter", self.device.adapter())?;
        r.serialize_field("shape", &self.measured.shape())?;
        r.serialize_field("median_s", &self.median_s)?;
        r.serialize_field("gflops", &self.gflops)?;
        r.serialize_field("gbps", &self.gbps)?;
        r.serialize_field("pct_peak", &self.pct_peak)?;
        r.serialize_field("gpu_speedup", &self.gpu_speedup)?;
        r.serialize_field("host_s", &self.host_s)?;
        r.serialize_field("timing", self.timing.name())?;
        r.serialize_field("tiles", &self.tiles.map(|t| t.to_string()))?;
        r.end()
    }
}

/// Sizes to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Small sizes, so a run on a software adapter takes well under two minutes.
    pub quick: bool,
}

/// FP32 peak TFLOP/s of adapters whose name contains the key (vendor figures, boost clock).
const PEAKS: [(&str, f64); 8] = [
    ("H200", 67.0),
    ("H100 PCIe", 51.2),
    ("H100", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("RTX 4090", 82.6),
    ("RTX 3090", 35.6),
    ("Apple M2", 3.6),
];

/// The FP32 peak of a known adapter, in GFLOP/s.
pub fn fp32_peak_gflops(adapter: &str) -> Option<f64> {
    PEAKS
        .iter()
        .find(|(k, _)| adapter.contains(k))
        .map(|(_, t)| t * 1e3)
}

const REPS: usize = 7;

/// Float counts of the copy and the optimizer updates: the same, so that each update's row
/// can give its share of the copy's bandwidth.
const BANDWIDTH_SIZES: &[usize] = &[1 << 20, 10_000_000, 100_000_000];

/// Storage buffers of `lens` floats for a benchmark's operands.
fn operands(ctx: &GpuContext, lens: &[usize]) -> Result<Vec<wgpu::Buffer>> {
    lens.iter()
        .map(|&n| ctx.storage_buffer("bench operand", n))
        .collect()
}

/// One kernel launch with its own buffers, ready to run again and again (for benchmarks).
pub struct GpuOp {
    ctx: Arc<GpuContext>,
    recs: Vec<Recorded>,
    _buffers: Vec<wgpu::Buffer>,
}

impl GpuOp {
    /// `launch` bound to new buffers of `lens` floats, in binding order.
    fn new(ctx: &Arc<GpuContext>, launch: &Launch, lens: &[usize]) -> Result<GpuOp> {
        let buffers = operands(ctx, lens)?;
        let ranges: Vec<BufferRange<'_>> = buffers.iter().map(Into::into).collect();
        Ok(GpuOp {
            recs: vec![ctx.record(launch, &ranges)],
            ctx: ctx.clone(),
            _buffers: buffers,
        })
    }

    /// `C[M,N] = op(A)·op(B)`, no bias.
    pub fn matmul(ctx: &Arc<GpuContext>, dims: MatmulDims, t: Transpose) -> Result<GpuOp> {
        let tile = ctx.matmul_tile(dims, t)?;
        GpuOp::matmul_with(ctx, dims, t, tile)
    }

    /// `C[M,N] = op(A)·op(B)` with a given tile shape.
    pub fn matmul_with(
        ctx: &Arc<GpuContext>,
        dims: MatmulDims,
        t: Transpose,
        tile: TileConfig,
    ) -> Result<GpuOp> {
        let launches = kernels::matmul(t, dims, dims, false, tile, ctx.max_dim())?;
        // The fourth: where a fused activation would go, unused here.
        let buffers = operands(ctx, &[dims.m * dims.k, dims.k * dims.n, dims.m * dims.n, 1])?;
        Ok(GpuOp {
            recs: ctx.record_matmul(
                &launches,
                dims,
                tile,
                (&buffers[0]).into(),
                (&buffers[1]).into(),
                None,
                (&buffers[2]).into(),
                (&buffers[3]).into(),
            )?,
            ctx: ctx.clone(),
            _buffers: buffers,
        })
    }

    /// The fused update of `n` parameters by `optimizer`, a steady-state one (see
    /// [`steady_update`]).
    pub fn update(ctx: &Arc<GpuContext>, optimizer: &Optimizer, n: usize) -> Result<GpuOp> {
        let uniform = steady_update(optimizer, n)?;
        let launch = kernels::update(optimizer.rule().kernel(), &uniform, ctx.max_dim());
        let mut buffers = vec![
            ctx.storage_buffer("bench parameters", n)?,
            ctx.storage_buffer("bench gradients", n)?,
            ctx.storage_buffer("bench loss history", 1)?,
            ctx.storage_buffer("bench no-decay ranges", 2)?,
        ];
        let state = ctx.state_buffers(&optimizer.state_blocks(), n)?;
        let rec = {
            let [p, g, h, d] = &buffers[..] else {
                unreachable!("four buffers")
            };
            ctx.record(
                &launch,
                &kernels::update_bindings(p.into(), g.into(), h, d, state.iter().map(Into::into)),
            )
        };
        buffers.extend(state);
        Ok(GpuOp {
            recs: vec![rec],
            ctx: ctx.clone(),
            _buffers: buffers,
        })
    }

    /// A copy of `n` floats.
    pub fn copy(ctx: &Arc<GpuContext>, n: usize) -> Result<GpuOp> {
        let launch = kernels::copy(n, ctx.max_dim());
        GpuOp::new(ctx, &launch, &[n, n])
    }

    /// Submits the launch and waits for it to finish.
    pub fn run(&self) -> Result<()> {
        self.ctx.submit(self.recs.iter().map(|r| &r.dispatch))?;
        self.ctx.wait_idle()
    }
}

/// Seconds of GPU time one run of `op` takes (see [`GpuContext::time_dispatch`]).
fn time_gpu(op: &GpuOp) -> Result<(f64, Timing)> {
    let dispatches: Vec<_> = op.recs.iter().map(|r| &r.dispatch).collect();
    op.ctx.time_dispatch(&dispatches, 2, REPS)
}

fn cpu_time(mut f: impl FnMut()) -> Result<f64> {
    measure(1, REPS, || {
        let start = Instant::now();
        f();
        Ok(start.elapsed().as_secs_f64())
    })
}

fn row(measured: Measured, device: &Device, median_s: f64, timing: Timing) -> BenchRow {
    BenchRow {
        measured,
        device: BenchDevice::of(device),
        median_s,
        gflops: None,
        gbps: None,
        pct_peak: None,
        gpu_speedup: None,
        host_s: None,
        timing,
        tiles: None,
    }
}

/// Every op of `ops` on `device`.
pub fn run(device: &Device, ops: &[BenchOp], options: BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for &op in BenchOp::ALL.iter().filter(|o| ops.contains(o)) {
        match op {
            BenchOp::Copy => rows.extend(bench_copy(device, options)?),
            BenchOp::Matmul => rows.extend(bench_matmul(device, options)?),
            BenchOp::Optimizers => rows.extend(bench_optimizers(device, options)?),
            BenchOp::TrainStep => rows.extend(bench_train_step(device, options)?),
            BenchOp::Epoch => rows.extend(bench_epoch(device, options)?),
            BenchOp::Profile => rows.extend(bench_profile(device, options)?),
        }
    }
    // An update is bandwidth-bound: compare its bytes per second with the copy's of as many
    // floats.
    let copy_gbps: Vec<(usize, f64)> = rows
        .iter()
        .filter_map(|r| match (&r.measured, r.gbps) {
            (Measured::Copy { floats }, Some(g)) => Some((*floats, g)),
            _ => None,
        })
        .collect();
    for r in rows.iter_mut() {
        if let (Measured::Update { params, .. }, Some(g)) = (&r.measured, r.gbps)
            && let Some((_, c)) = copy_gbps.iter().find(|(n, _)| n == params)
        {
            r.pct_peak = Some(100.0 * g / c);
        }
    }
    Ok(rows)
}

fn sizes(options: BenchOptions, quick: &[usize], full: &[usize]) -> Vec<usize> {
    if options.quick {
        quick.to_vec()
    } else {
        full.to_vec()
    }
}

/// Element counts a device can bind in one buffer.
fn fits(device: &Device, floats: usize) -> bool {
    match device {
        Device::Cpu => true,
        Device::Gpu(ctx) => ctx.check_size("bench", floats as u64 * 4, true).is_ok(),
    }
}

fn bench_copy(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for n in sizes(options, &[1 << 20], BANDWIDTH_SIZES) {
        if !fits(device, n) {
            continue;
        }
        let (t, timing) = match device {
            Device::Cpu => {
                let src = vec![1.0f32; n];
                let mut dst = vec![0.0f32; n];
                (
                    cpu_time(|| dst.copy_from_slice(std::hint::black_box(&src)))?,
                    Timing::Wall,
                )
            }
            Device::Gpu(ctx) => time_gpu(&GpuOp::copy(ctx, n)?)?,
        };
        let mut r = row(Measured::Copy { floats: n }, device, t, timing);
        r.gbps = Some(2.0 * 4.0 * n as f64 / t / 1e9);
        rows.push(r);
    }
    Ok(rows)
}

fn bench_matmul(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    let mut shapes: Vec<(MatmulDims, Transpose, &'static str)> =
        sizes(options, &[256, 512], &[256, 512, 1024, 2048, 4096])
            .into_iter()
            .map(|s| (MatmulDims { m: s, n: s, k: s }, Transpose::Nn, "square"))
            .collect();
    // The three products of a dense layer in → out at batch b: Y = X·Wᵀ, dW = dYᵀ·X, dX = dY·W.
    let (b, i, o) = if options.quick {
        (32, 64, 128)
    } else {
        (256, 784, 1024)
    };
    shapes.push((
        MatmulDims { m: b, n: o, k: i },
        Transpose::Nt,
        "layer forward",
    ));
    shapes.push((MatmulDims { m: o, n: i, k: b }, Transpose::Tn, "layer dW"));
    shapes.push((MatmulDims { m: b, n: i, k: o }, Transpose::Nn, "layer dX"));
    let mut rows = Vec::new();
    for (dims, t, case) in shapes {
        let MatmulDims { m, n, k } = dims;
        let (ta, tb) = (m * k, k * n);
        let (time, timing, tiles) = match device {
            Device::Cpu => {
                let a = vec![0.5f32; ta];
                let bm = vec![0.25f32; tb];
                let mut c = vec![0.0f32; m * n];
                let t = cpu_time(|| crate::cpu::matmul::matmul(&a, &bm, None, &mut c, dims, t))?;
                (t, Timing::Wall, None)
            }
            Device::Gpu(ctx) => {
                let tile = ctx.matmul_tile(dims, t)?;
                let (time, timing) = time_gpu(&GpuOp::matmul_with(ctx, dims, t, tile)?)?;
                (time, timing, Some(tile))
            }
        };
        let measured = Measured::Matmul { dims, t, case };
        let mut r = row(measured, device, time, timing);
        r.tiles = tiles;
        let gflops = 2.0 * (m * n * k) as f64 / time / 1e9;
        r.gflops = Some(gflops);
        r.pct_peak = fp32_peak_gflops(r.device.adapter()).map(|p| 100.0 * gflops / p);
        rows.push(r);
    }
    Ok(rows)
}

/// The optimizers `kiln bench` measures: SGD with momentum 0.9, the others at PyTorch's
/// defaults.
pub fn bench_optimizer_set() -> Vec<Optimizer> {
    optim::REGISTRY
        .iter()
        .map(|r| {
            let mut table = toml::Table::new();
            if r.name == "sgd" {
                table.insert("momentum".into(), toml::Value::Float(0.9));
            }
            (r.from_table)(r.name, table).expect("defaults are valid")
        })
        .collect()
}

/// The uniform block of update 6 of `n` parameters at rate 0.01: past every optimizer's
/// first-step special case (SGD's buffer copy, RAdam's unrectified warm-up up to update 5), so
/// every state tensor is read and written and every branch is the one a long run takes.
pub fn steady_update(optimizer: &Optimizer, n: usize) -> Result<optim::UpdateUniform> {
    let mut scalars = optimizer.rule().initial_scalars();
    let mut uniform = optimizer.one_off_uniform(0.01, n, &mut scalars)?;
    for _ in 1..6 {
        uniform = optimizer.one_off_uniform(0.01, n, &mut scalars)?;
    }
    Ok(uniform)
}

/// Bytes an update of `n` parameters must move: parameters and each used state tensor read
/// and written, gradients read.
pub fn update_bytes(optimizer: &Optimizer, n: usize) -> f64 {
    (3 + 2 * optimizer.used_state().len()) as f64 * 4.0 * n as f64
}

fn bench_optimizers(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for optimizer in bench_optimizer_set() {
        for n in sizes(options, &[1 << 20], BANDWIDTH_SIZES) {
            if !fits(device, n) {
                continue;
            }
            let (t, timing) = match device {
                Device::Cpu => {
                    let mut p = vec![1.0f32; n];
                    let g = vec![0.001f32; n];
                    let mut state = optimizer.new_state(n);
                    let uniform = steady_update(&optimizer, n)?;
                    let rule: &dyn UpdateRule = optimizer.rule();
                    (
                        cpu_time(|| {
                            optim::update_arena(
                                rule,
                                &uniform.scalars,
                                &[],
                                &mut p,
                                &g,
                                &mut state.blocks,
                            )
                        })?,
                        Timing::Wall,
                    )
                }
                Device::Gpu(ctx) => time_gpu(&GpuOp::update(ctx, &optimizer, n)?)?,
            };
            let measured = Measured::Update {
                optimizer: optimizer.name(),
                params: n,
            };
            let mut r = row(measured, device, t, timing);
            r.gbps = Some(update_bytes(&optimizer, n) / t / 1e9);
            rows.push(r);
        }
    }
    Ok(rows)
}

/// The benchmark MLP: dense layers of `widths` with ReLU between, cross-entropy, trained by
/// SGD with momentum 0.9 at a fixed rate, and the FLOPs of one pass over `rows` rows
/// (forward and both backward products: 3 · 2·rows·in·out per layer).
fn bench_trainer(
    device: &Device,
    input: usize,
    widths: &[usize],
    batch: usize,
    rows: usize,
) -> Result<(Trainer, f64)> {
    let mut layers = Vec::new();
    for &w in widths {
        layers.push(Layer::Dense { out: w });
        layers.push(Layer::Activation(Activation::Relu));
    }
    layers.pop();
    let model = Sequential::new(input, layers, Loss::CrossEntropy)?;
    let mut fan_in = input;
    let flops = widths
        .iter()
        .map(|&w| {
            let f = 6.0 * (rows * fan_in * w) as f64;
            fan_in = w;
            f
        })
        .sum::<f64>();
    let options = TrainOptions {
        optimizer: Optimizer::new(optim::Sgd {
            momentum: 0.9,
            ..Default::default()
        })?,
        max_batch: batch,
        ..Default::default()
    };
    let trainer = Trainer::new(device, model, options, Scheduler::fixed(0.01)?)?;
    Ok((trainer, flops))
}

/// Synthetic rows: x[i] = (i mod 17)/17 over `rows` × `input`, labels i mod `classes`.
fn synthetic(rows: usize, input: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let x = (0..rows * input)
        .map(|i| ((i % 17) as f32) / 17.0)
        .collect();
    let labels = (0..rows).map(|i| (i % classes) as u32).collect();
    (x, labels)
}

/// One epoch from a resident data set, reshuffled first: wall time of the whole epoch and
/// the host's share per step (recording and submitting), medians of 3 after one warm-up. On a
/// GPU twice, side by side: with updates submitted together (the default) and one by one.
fn bench_epoch(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    let (rows, input, widths, batch) = if options.quick {
        (4096usize, 64usize, vec![128usize, 10], 256usize)
    } else {
        (60_000, 784, vec![1024, 1024, 10], 256)
    };
    if !fits(device, rows * input) {
        return Ok(Vec::new());
    }
    let (mut trainer, flops) = bench_trainer(device, input, &widths, batch, rows)?;
    let (x, labels) = synthetic(rows, input, widths[widths.len() - 1]);
    trainer.load_data(&x, Targets::Classes(&labels))?;
    let per_submit: &[usize] = match device {
        Device::Gpu(_) => &[crate::train::DEFAULT_STEPS_PER_SUBMIT, 1],
        Device::Cpu => &[crate::train::DEFAULT_STEPS_PER_SUBMIT],
    };
    let mut out = Vec::new();
    for &steps_per_submit in per_submit {
        trainer.set_steps_per_submit(steps_per_submit)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut host = Vec::new();
        let t = measure(1, 3, || {
            let start = Instant::now();
            let mut order: Vec<u32> = (0..rows as u32).collect();
            order.shuffle(&mut rng);
            trainer.set_order(&order)?;
            let mut host_time = 0.0;
            for s in (0..rows).step_by(batch) {
                let t0 = Instant::now();
                trainer.step_data(s, batch.min(rows - s))?;
                host_time += t0.elapsed().as_secs_f64();
            }
            host.push(host_time / rows.div_ceil(batch) as f64);
            // The last updates may still be queued: reading the losses submits them and waits.
            trainer.losses()?;
            Ok(start.elapsed().as_secs_f64())
        })?;
        let measured = Measured::Epoch {
            rows,
            input,
            widths: widths.clone(),
            batch,
            steps_per_submit,
        };
        out.push(wall_row(measured, device, t, flops, host, 3));
    }
    Ok(out)
}

/// Steps a `train_loop` or `resident_step` row times per measurement: the queue fills and
/// drains as in an epoch.
const STEP_RUN: usize = 20;

/// Runs of [`STEP_RUN`] calls of `step` and one wait for the device (a read of the losses),
/// after one warm-up run: the median time per step and each run's host time per step.
fn time_step_runs(
    trainer: &mut Trainer,
    mut step: impl FnMut(&mut Trainer) -> Result<()>,
) -> Result<(f64, Vec<f64>)> {
    let mut host = Vec::new();
    let t = measure(1, REPS, || {
        let start = Instant::now();
        let mut host_time = 0.0;
        for _ in 0..STEP_RUN {
            let t0 = Instant::now();
            step(trainer)?;
            host_time += t0.elapsed().as_secs_f64();
        }
        host.push(host_time / STEP_RUN as f64);
        // Submits what is still queued and waits for it.
        trainer.losses()?;
        Ok(start.elapsed().as_secs_f64() / STEP_RUN as f64)
    })?;
    Ok((t, host))
}

/// The MLP steps `train_step` and `profile` measure: (input, widths, batch).
fn step_cases(options: BenchOptions) -> Vec<(usize, Vec<usize>, usize)> {
    let mut cases = vec![(64usize, vec![128usize, 10], 32usize)];
    if !options.quick {
        cases.push((784, vec![1024, 1024, 10], 256));
        cases.push((784, vec![1024, 1024, 10], 1024));
    }
    cases
}

fn bench_train_step(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for (input, widths, batch) in step_cases(options) {
        let (mut trainer, flops_per_step) = bench_trainer(device, input, &widths, batch, batch)?;
        let (x, labels) = synthetic(batch, input, widths[widths.len() - 1]);
        let mut host = Vec::new();
        // On a GPU the first large batches also measure whether to copy on several threads
        // (`gpu::upload`): those come before the timed steps.
        let warmup = match device {
            Device::Gpu(_) => 2 + 2 * crate::gpu::upload::SAMPLES,
            Device::Cpu => 2,
        };
        let t = measure(warmup, REPS, || {
            let start = Instant::now();
            trainer.step(&x, Targets::Classes(&labels))?;
            host.push(start.elapsed().as_secs_f64());
            if let Device::Gpu(ctx) = device {
                ctx.wait_idle()?;
            }
            Ok(start.elapsed().as_secs_f64())
        })?;
        let measured = |source| Measured::TrainStep {
            input,
            widths: widths.clone(),
            batch,
            source,
        };
        rows.push(wall_row(
            measured(StepSource::Host),
            device,
            t,
            flops_per_step,
            host,
            REPS,
        ));

        // The same steps in a loop: the wait only at the end.
        let (t, host) = time_step_runs(&mut trainer, |t| {
            t.step(&x, Targets::Classes(&labels)).map(|_| ())
        })?;
        rows.push(wall_row(
            measured(StepSource::HostLoop),
            device,
            t,
            flops_per_step,
            host,
            REPS,
        ));

        // The same batch resident: what a step from a device data set costs, host and device.
        trainer.load_data(&x, Targets::Classes(&labels))?;
        trainer.set_order(&(0..batch as u32).collect::<Vec<_>>())?;
        let (t, host) = time_step_runs(&mut trainer, |t| t.step_data(0, batch).map(|_| ()))?;
        rows.push(wall_row(
            measured(StepSource::Resident),
            device,
            t,
            flops_per_step,
            host,
            REPS,
        ));
    }
    Ok(rows)
}

/// Each `train_step` case's resident step, part by part: the median of each part over REPS
/// profiled updates after warm-up, their sum, and the whole update timed in its one pass.
/// On a GPU the times are GPU time from timestamps (none without them); on the CPU device
/// wall time.
fn bench_profile(device: &Device, options: BenchOptions) -> Result<Vec<BenchRow>> {
    if let Device::Gpu(ctx) = device
        && !ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    {
        log::warn!("{} has no timestamp queries: no profile rows", ctx.name());
        return Ok(Vec::new());
    }
    let timing = match device {
        Device::Gpu(_) => Timing::Timestamp,
        Device::Cpu => Timing::Wall,
    };
    let mut rows = Vec::new();
    for (input, widths, batch) in step_cases(options) {
        let (mut trainer, _) = bench_trainer(device, input, &widths, batch, batch)?;
        let (x, labels) = synthetic(batch, input, widths[widths.len() - 1]);
        trainer.load_data(&x, Targets::Classes(&labels))?;
        trainer.set_order(&(0..batch as u32).collect::<Vec<_>>())?;
        for _ in 0..2 {
            trainer.step_data(0, batch)?;
        }
        trainer.losses()?;
        let mut parts: Vec<crate::train::KernelTime> = Vec::new();
        let mut times: Vec<Vec<f64>> = Vec::new();
        for _ in 0..REPS {
            parts = trainer.profile(ProfileMode::Kernels, |t| t.step_data(0, batch))?;
            times.resize(parts.len(), Vec::new());
            for (t, p) in times.iter_mut().zip(&parts) {
                t.push(p.seconds);
            }
        }
        let mut whole = Vec::new();
        for _ in 0..REPS {
            let p = trainer.profile(ProfileMode::Update, |t| t.step_data(0, batch))?;
            whole.extend(p.iter().map(|k| k.seconds));
        }
        let measured = |kernel: String| Measured::Kernel {
            input,
            widths: widths.clone(),
            batch,
            kernel,
        };
        let mut sum = 0.0;
        for (i, (part, t)) in parts.iter().zip(times).enumerate() {
            let t = median(t);
            sum += t;
            let mut r = row(
                measured(format!("{i:02} {}", part.kernel)),
                device,
                t,
                timing,
            );
            r.tiles = part.tile;
            // A part shorter than the clock's tick has no rate.
            if let Some(flops) = part.flops.filter(|_| t > 0.0) {
                let gflops = flops / t / 1e9;
                r.gflops = Some(gflops);
                r.pct_peak = fp32_peak_gflops(r.device.adapter()).map(|p| 100.0 * gflops / p);
            }
            rows.push(r);
        }
        rows.push(row(measured("sum of kernels".into()), device, sum, timing));
        rows.push(row(
            measured("whole update".into()),
            device,
            median(whole),
            timing,
        ));
    }
    Ok(rows)
}

/// A row timed on the wall clock at `t` seconds of `flops` each, and on a GPU the median host
/// time of its `timed` measured runs (the last of `host`, after the warm-up; a CPU step is
/// synchronous, its host time the step itself).
fn wall_row(
    measured: Measured,
    device: &Device,
    t: f64,
    flops: f64,
    mut host: Vec<f64>,
    timed: usize,
) -> BenchRow {
    let mut r = row(measured, device, t, Timing::Wall);
    r.gflops = Some(flops / t / 1e9);
    if matches!(device, Device::Gpu(_)) {
        r.host_s = Some(median(host.split_off(host.len().saturating_sub(timed))));
    }
    r
}

/// Fills `gpu_speedup` of the GPU rows with CPU time / GPU time for the same op and shape.
pub fn compare(rows: &mut [BenchRow]) {
    let cpu: Vec<(Measured, f64)> = rows
        .iter()
        .filter(|r| r.device == BenchDevice::Cpu)
        .map(|r| (r.measured.clone(), r.median_s))
        .collect();
    for r in rows.iter_mut().filter(|r| r.device != BenchDevice::Cpu) {
        if let Some((_, c)) = cpu.iter().find(|(m, _)| *m == r.measured) {
            r.gpu_speedup = Some(c / r.median_s);
        }
    }
}
