//! One kernel at a time over host slices: upload, dispatch, read back. This is how tests hold
//! each kernel against its CPU twin; training records whole steps instead (`crate::train`).
//! Inputs are assumed checked by `crate::device::Device`.

use super::kernels::{self, Launch};
use super::matmul_tiles::TileConfig;
use super::{BufferRange, Dispatch, GpuContext, Recorded};
use std::time::Instant;

use crate::bench::Timing;
use crate::error::Result;
use crate::ops::{Activation, Loss, MatmulDims, Targets, Transpose};
use crate::optim::{Optimizer, StateBlock, UpdateUniform};
use crate::timing::measure;

/// Errs for an activation no product fuses (softmax: it needs whole rows).
fn check_fusable(act: Activation) -> Result<()> {
    if kernels::fused_activation_id(act).is_none() {
        return Err(crate::KilnError::invalid(
            "act",
            format!("{} works on whole rows; it is not fused", act.name()),
        ));
    }
    Ok(())
}

/// Records `dispatches`, in order, into one compute pass of `encoder`.
pub fn encode_pass<'a>(
    encoder: &mut wgpu::CommandEncoder,
    dispatches: impl IntoIterator<Item = &'a Dispatch>,
) {
    encode_pass_with(encoder, dispatches, None);
}

fn encode_pass_with<'a>(
    encoder: &mut wgpu::CommandEncoder,
    dispatches: impl IntoIterator<Item = &'a Dispatch>,
    timestamp_writes: Option<wgpu::ComputePassTimestampWrites<'_>>,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("kiln"),
        timestamp_writes,
    });
    for d in dispatches {
        pass.set_pipeline(&d.pipeline.pipeline);
        pass.set_bind_group(d.pipeline.group, &d.bind_group, &[]);
        pass.dispatch_workgroups(d.grid[0], d.grid[1], d.grid[2]);
    }
}

/// Pairs of timestamp queries, each around one compute pass, and the buffer they resolve into.
pub struct Timestamps {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    pairs: u32,
    /// Nanoseconds per tick.
    period: f64,
}

/// Timestamps one query set holds.
const MAX_TIMESTAMPS: usize = wgpu::QUERY_SET_MAX_QUERIES as usize;

impl Timestamps {
    /// Records `dispatches` as one compute pass between the timestamps of pair `pair`.
    pub fn encode_pass<'a>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
        pair: u32,
    ) {
        debug_assert!(pair < self.pairs);
        encode_pass_with(
            encoder,
            dispatches,
            Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * pair),
                end_of_pass_write_index: Some(2 * pair + 1),
            }),
        );
    }

    /// Records the copy of the first `pairs` pairs' timestamps (those written: a query never
    /// written has no value to copy) into the buffer [`Timestamps::read`] reads.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder, pairs: u32) {
        let pairs = pairs.min(self.pairs);
        encoder.resolve_query_set(&self.queries, 0..2 * pairs, &self.resolve, 0);
    }

    /// Seconds between the timestamps of each of the first `pairs` pairs, once the GPU has
    /// run what was resolved (waits for it).
    pub fn read(&self, ctx: &GpuContext, pairs: u32) -> Result<Vec<f64>> {
        let pairs = pairs.min(self.pairs);
        let raw: Vec<f32> = ctx.read_back(&self.resolve, 0, 4 * pairs as usize)?;
        // Read as f32s, so only 4-byte aligned: each tick taken out byte by byte.
        let bytes: &[u8] = bytemuck::cast_slice(&raw);
        let tick = |i: usize| bytemuck::pod_read_unaligned::<u64>(&bytes[8 * i..8 * i + 8]);
        Ok((0..pairs as usize)
            .map(|p| tick(2 * p + 1).saturating_sub(tick(2 * p)) as f64 * self.period * 1e-9)
            .collect())
    }
}

impl GpuContext {
    /// `pairs` pairs of timestamp queries; an error if the adapter has none, or if one query
    /// set cannot hold them.
    pub fn timestamps(&self, pairs: usize) -> Result<Timestamps> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(crate::KilnError::Gpu(format!(
                "{} has no timestamp queries, which timing on the GPU needs",
                self.name()
            )));
        }
        if pairs == 0 || 2 * pairs > MAX_TIMESTAMPS {
            return Err(crate::KilnError::invalid(
                "timestamps",
                format!(
                    "{pairs} passes to time; one query set times 1 to {}",
                    MAX_TIMESTAMPS / 2
                ),
            ));
        }
        Ok(Timestamps {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln.timing"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * pairs as u32,
            }),
            resolve: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln.timing.resolve"),
                size: 16 * pairs as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            pairs: pairs as u32,
            period: self.queue.get_timestamp_period() as f64,
        })
    }

    /// Each of `launches` recorded over its own `bindings` (as [`GpuContext::record`]).
    pub fn record_each(
        &self,
        launches: &[Launch],
        bindings: &[Vec<BufferRange<'_>>],
    ) -> Vec<Recorded> {
        launches
            .iter()
            .zip(bindings)
            .map(|(l, b)| self.record(l, b))
            .collect()
    }

    /// Records `launch` over `buffers`, with a new uniform block holding its parameters bound
    /// last.
    pub fn record(&self, launch: &Launch, buffers: &[BufferRange<'_>]) -> Recorded {
        let uniform = self.uniform_bytes(launch.kernel.entry, &launch.uniform);
        Recorded {
            dispatch: self.record_with_uniform(launch, buffers, (&uniform).into()),
            uniform,
        }
    }

    /// Records `launch` over `buffers` with its uniform block read from `uniform` (a range
    /// the caller fills; `launch.uniform` is not written).
    pub fn record_with_uniform(
        &self,
        launch: &Launch,
        buffers: &[BufferRange<'_>],
        uniform: BufferRange<'_>,
    ) -> Dispatch {
        let pipeline = self.pipeline(launch.kernel, &launch.constants, &launch.defines);
        let mut all = buffers.to_vec();
        all.push(uniform);
        let bind_group = self.bind_group(&pipeline, &all);
        Dispatch {
            pipeline,
            bind_group,
            grid: launch.grid,
        }
    }

    /// Records `dispatches`, in order, into one compute pass of one command encoder, submits
    /// it, and reports GPU errors. WebGPU makes each dispatch's writes visible to the next, so
    /// a whole training step fits in one pass.
    pub fn submit<'a>(&self, dispatches: impl IntoIterator<Item = &'a Dispatch>) -> Result<()> {
        self.submit_then(dispatches, |_| {}).map(|_| ())
    }

    /// As [`GpuContext::submit`], with `after` recording more commands (copies) behind the
    /// compute pass in the same command buffer. Returns the submission's index.
    pub fn submit_then<'a>(
        &self,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
        after: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<wgpu::SubmissionIndex> {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encode_pass(&mut encoder, dispatches);
        after(&mut encoder);
        self.submit_encoder(encoder)
    }

    /// Submits what `encoder` recorded and reports GPU errors.
    pub fn submit_encoder(&self, encoder: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
        let index = self.queue.submit([encoder.finish()]);
        self.check_errors()?;
        Ok(index)
    }

    /// Records and submits one launch.
    fn run(&self, launch: &Launch, buffers: &[BufferRange<'_>]) -> Result<()> {
        self.submit([&self.record(launch, buffers).dispatch])
    }

    /// Median seconds one run of `dispatches` (in order, in one compute pass) takes over
    /// `reps` runs after `warmup`: GPU time from timestamp queries around the pass when the
    /// adapter has them, else wall time around submit and wait.
    pub fn time_dispatch(
        &self,
        dispatches: &[&Dispatch],
        warmup: usize,
        reps: usize,
    ) -> Result<(f64, Timing)> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            let t = measure(warmup, reps, || {
                let start = Instant::now();
                self.submit(dispatches.iter().copied())?;
                self.wait_idle()?;
                Ok(start.elapsed().as_secs_f64())
            })?;
            return Ok((t, Timing::Wall));
        }
        let timestamps = self.timestamps(1)?;
        let t = measure(warmup, reps, || {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            timestamps.encode_pass(&mut encoder, dispatches.iter().copied(), 0);
            timestamps.resolve(&mut encoder, 1);
            self.submit_encoder(encoder)?;
            Ok(timestamps.read(self, 1)?[0])
        })?;
        Ok((t, Timing::Timestamp))
    }

    /// `launches` (one product's, from [`kernels::matmul`] for `dims` and `tile`) recorded
    /// over the given buffers, with partial products of their own where the tile splits k.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_matmul(
        &self,
        launches: &[Launch],
        dims: MatmulDims,
        tile: TileConfig,
        a: BufferRange<'_>,
        b: BufferRange<'_>,
        bias: Option<BufferRange<'_>>,
        c: BufferRange<'_>,
        y: BufferRange<'_>,
    ) -> Result<Vec<Recorded>> {
        let scratch = match kernels::matmul_scratch_len(dims, tile) {
            0 => None,
            len => Some(self.storage_buffer("split-k partial products", len)?),
        };
        let bindings = kernels::matmul_bindings(
            launches,
            dims,
            a,
            b,
            bias,
            c,
            y,
            scratch.as_ref().map(Into::into),
            self.dummy(),
        );
        // The bind groups keep the partial products alive.
        Ok(self.record_each(launches, &bindings))
    }

    pub(crate) fn max_dim(&self) -> u32 {
        self.limits().max_compute_workgroups_per_dimension
    }

    /// [`Device::matmul`](crate::Device::matmul) with a chosen tile shape instead of the
    /// tuned one: how tests hold every shape against the CPU, and how a shape is tried out.
    pub fn matmul_with_tile(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        dims: MatmulDims,
        t: Transpose,
        tile: TileConfig,
    ) -> Result<Vec<f32>> {
        crate::ops::check_matmul(a.len(), b.len(), bias.map(<[f32]>::len), dims, t)?;
        tile.require_fits(self.limits(), "tile", &self.name())?;
        self.matmul(a, b, bias, dims, t, Some(tile))
    }

    /// The product with `tile`, or the tuned shape for `dims` when `None`.
    pub(crate) fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        dims: MatmulDims,
        t: Transpose,
        tile: Option<TileConfig>,
    ) -> Result<Vec<f32>> {
        Ok(self.matmul_then(a, b, bias, dims, t, tile, None)?.0)
    }

    /// The product as a training step's forward pass runs it with the layer's activation fused
    /// into its epilogue: (pre-activation C, act(C)). How tests hold the fused epilogue to the
    /// CPU's matmul and activation. `act` must work elementwise (not softmax).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_activation(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        dims: MatmulDims,
        t: Transpose,
        act: Activation,
        tile: Option<TileConfig>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::ops::check_matmul(a.len(), b.len(), bias.map(<[f32]>::len), dims, t)?;
        check_fusable(act)?;
        let (c, y) = self.matmul_then(a, b, bias, dims, t, tile, Some((act, None)))?;
        Ok((c, y.expect("asked for")))
    }

    /// The backward product dX = op(A)·op(B) as a training step runs it with the activation
    /// before the layer folded into its epilogue: dX·act'(v), `v` the activation's input or
    /// output as its backward reads it (`x` for relu, leaky_relu and gelu, `y` for sigmoid and
    /// tanh), laid out as dX. How tests hold that epilogue to the separate kernels.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_activation_grad(
        &self,
        a: &[f32],
        b: &[f32],
        v: &[f32],
        dims: MatmulDims,
        t: Transpose,
        act: Activation,
        tile: Option<TileConfig>,
    ) -> Result<Vec<f32>> {
        crate::ops::check_matmul(a.len(), b.len(), None, dims, t)?;
        crate::ops::check_len(
            "fused activation gradient",
            "v",
            v.len(),
            dims.m * dims.n,
            "m·n",
        )?;
        check_fusable(act)?;
        Ok(self
            .matmul_then(a, b, None, dims, t, tile, Some((act, Some(v))))?
            .0)
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_then(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        dims: MatmulDims,
        t: Transpose,
        tile: Option<TileConfig>,
        // An activation to fold in: forward (None), or its gradient read from V (Some).
        act: Option<(Activation, Option<&[f32]>)>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let tile = match tile {
            Some(tile) => tile,
            None => self.matmul_tile(dims, t)?,
        };
        self.check_loops(kernels::matmul_loops(dims, tile))?;
        let mut launches = kernels::matmul(t, dims, dims, bias.is_some(), tile, self.max_dim())?;
        launches = match act {
            None => launches,
            Some((act, None)) => kernels::fuse_activation(launches, act),
            Some((act, Some(_))) => kernels::fuse_activation_grad(launches, act),
        };
        let a_buf = self.upload("a", a)?;
        let b_buf = self.upload("b", b)?;
        // V rides in the bias's binding.
        let bias = bias.or(act.and_then(|(_, v)| v));
        let bias_buf = bias.map(|b| self.upload("bias", b)).transpose()?;
        let c = self.storage_buffer("c", dims.m * dims.n)?;
        let y = match act {
            Some((_, None)) => self.storage_buffer("y", dims.m * dims.n)?,
            _ => self.storage_buffer("unused output", 1)?,
        };
        let wants_y = matches!(act, Some((_, None)));
        let recorded = self.record_matmul(
            &launches,
            dims,
            tile,
            (&a_buf).into(),
            (&b_buf).into(),
            bias_buf.as_ref().map(Into::into),
            (&c).into(),
            (&y).into(),
        )?;
        self.submit(recorded.iter().map(|r| &r.dispatch))?;
        let y = wants_y
            .then(|| self.read_back(&y, 0, dims.m * dims.n))
            .transpose()?;
        Ok((self.read_back(&c, 0, dims.m * dims.n)?, y))
    }

    pub(crate) fn bias_grad(&self, dy: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.check_loops(kernels::bias_loops(rows))?;
        let launches = kernels::bias_grad(rows, cols, rows, self.max_dim())?;
        let dy_buf = self.upload("dy", dy)?;
        let db = self.storage_buffer("db", cols)?;
        let sums = match launches.len() {
            1 => None,
            _ => Some(self.storage_buffer("bias gradient sums", kernels::bias_parts(rows) * cols)?),
        };
        let bindings = kernels::bias_grad_bindings(
            &launches,
            (&dy_buf).into(),
            sums.as_ref().map(Into::into),
            (&db).into(),
        );
        let recorded = self.record_each(&launches, &bindings);
        self.submit(recorded.iter().map(|r| &r.dispatch))?;
        self.read_back(&db, 0, cols)
    }

    pub(crate) fn activation_forward(
        &self,
        act: Activation,
        x: &[f32],
        cols: usize,
    ) -> Result<Vec<f32>> {
        self.check_loops(kernels::activation_loops(act, cols, false))?;
        let x_buf = self.upload("x", x)?;
        let y = self.storage_buffer("y", x.len())?;
        let launch = kernels::activation_forward(act, x.len(), cols, self.max_dim());
        self.run(&launch, &[(&x_buf).into(), (&y).into()])?;
        self.read_back(&y, 0, x.len())
    }

    pub(crate) fn activation_backward(
        &self,
        act: Activation,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        cols: usize,
    ) -> Result<Vec<f32>> {
        self.check_loops(kernels::activation_loops(act, cols, true))?;
        let x_buf = self.upload("x", x)?;
        let y_buf = self.upload("y", y)?;
        let dy_buf = self.upload("dy", dy)?;
        let dx = self.storage_buffer("dx", x.len())?;
        let launch = kernels::activation_backward(act, x.len(), cols, self.max_dim());
        let buffers = [
            (&x_buf).into(),
            (&y_buf).into(),
            (&dy_buf).into(),
            (&dx).into(),
        ];
        self.run(&launch, &buffers)?;
        self.read_back(&dx, 0, x.len())
    }

    /// Mean loss and its gradient, through the same two dispatches a training step uses.
    pub(crate) fn loss(
        &self,
        loss: Loss,
        output: &[f32],
        targets: Targets,
        cols: usize,
    ) -> Result<(f32, Vec<f32>)> {
        self.check_loops(kernels::loss_loops(loss, output.len(), cols))?;
        let out_buf = self.upload("output", output)?;
        let target_buf = self.upload("targets", &kernels::targets_as_f32(targets))?;
        let terms = self.storage_buffer("loss terms", output.len())?;
        let grad = self.storage_buffer("loss grad", output.len())?;
        let history = self.storage_buffer("loss history", 1)?;
        let (terms_launch, reduce_launch) =
            kernels::loss(loss, output.len(), cols, 0, self.max_dim());
        let terms_buffers = [
            (&out_buf).into(),
            (&target_buf).into(),
            (&terms).into(),
            (&grad).into(),
        ];
        let terms_pass = self.record(&terms_launch, &terms_buffers);
        let reduce_pass = self.record(&reduce_launch, &[(&terms).into(), (&history).into()]);
        self.submit([&terms_pass.dispatch, &reduce_pass.dispatch])?;
        let value = self.read_back(&history, 0, 1)?[0];
        Ok((value, self.read_back(&grad, 0, output.len())?))
    }

    /// ‖g‖², and with `max_norm` the clipped gradient, through the passes a training step uses.
    pub(crate) fn grad_norm(&self, grad: &mut [f32], max_norm: Option<f32>) -> Result<f32> {
        let g = self.upload("grad", grad)?;
        let partials = self.storage_buffer("norm partials", kernels::norm_groups(grad.len()))?;
        let history = self.storage_buffer("norm history", 1)?;
        let (partial, last) = kernels::sum_squares(grad.len(), 0);
        let mut passes = vec![
            self.record(&partial, &[(&g).into(), (&partials).into()]),
            self.record(&last, &[(&partials).into(), (&history).into()]),
        ];
        if let Some(max_norm) = max_norm {
            let clip = kernels::clip(grad.len(), 0, max_norm, self.max_dim());
            passes.push(self.record(&clip, &[(&g).into(), (&history).into()]));
        }
        self.submit(passes.iter().map(|p| &p.dispatch))?;
        if max_norm.is_some() {
            grad.copy_from_slice(&self.read_back(&g, 0, grad.len())?);
        }
        Ok(self.read_back(&history, 0, 1)?[0])
    }

    /// The buffers of an optimizer's state tensors, in [`UpdateRule::state`] order: used
    /// ones `len` long at their initial value, unused ones a one-element placeholder (the
    /// kernel binds every block; each needs its own buffer, as writable bindings may not
    /// alias).
    pub(crate) fn state_buffers(
        &self,
        blocks: &[StateBlock],
        len: usize,
    ) -> Result<Vec<wgpu::Buffer>> {
        blocks
            .iter()
            .map(|b| match (b.used, b.init) {
                (false, _) => self.storage_buffer(b.name, 1),
                // Storage buffers start zeroed.
                (true, 0.0) => self.storage_buffer(b.name, len),
                (true, init) => {
                    let buffer = self.storage_buffer(b.name, len)?;
                    self.fill(&buffer, len, init)?;
                    Ok(buffer)
                }
            })
            .collect()
    }

    /// `x` copied by the copy kernel `kiln bench` measures bandwidth with (how tests check
    /// it moves every element, vec4 path and scalar path).
    pub fn copy(&self, x: &[f32]) -> Result<Vec<f32>> {
        let src = self.upload("copy source", x)?;
        let dst = self.storage_buffer("copy destination", x.len())?;
        self.run(
            &kernels::copy(x.len(), self.max_dim()),
            &[(&src).into(), (&dst).into()],
        )?;
        self.read_back(&dst, 0, x.len())
    }

    /// One optimizer update through the kernel a training step uses.
    pub(crate) fn update(
        &self,
        optimizer: &Optimizer,
        uniform: &UpdateUniform,
        param: &mut [f32],
        grad: &[f32],
        blocks: &mut [Vec<f32>],
    ) -> Result<()> {
        let p = self.upload("param", param)?;
        let g = self.upload("grad", grad)?;
        let history = self.storage_buffer("loss history", 1)?;
        let no_decay = self.storage_buffer("no-decay ranges", 2)?;
        let state = self.state_buffers(&optimizer.state_blocks(), param.len())?;
        for (values, buf) in blocks.iter().zip(&state) {
            if !values.is_empty() {
                self.queue
                    .write_buffer(buf, 0, bytemuck::cast_slice(values));
            }
        }
        let launch = kernels::update(optimizer.rule().kernel(), uniform, self.max_dim());
        let buffers = kernels::update_bindings(
            (&p).into(),
            (&g).into(),
            &history,
            &no_decay,
            state.iter().map(Into::into),
        );
        self.run(&launch, &buffers)?;
        param.copy_from_slice(&self.read_back(&p, 0, param.len())?);
        for (b, buf) in blocks.iter_mut().zip(&state) {
            if !b.is_empty() {
                let len = b.len();
                b.copy_from_slice(&self.read_back(buf, 0, len)?);
            }
        }
        Ok(())
    }
}
