//! The training step on a GPU. Buffers, bind groups and pipelines are made once; a step writes
//! the batch, the targets and two small uniforms (the loss slot, the SGD rate), then records
//! every dispatch into one compute pass of one command encoder and submits it once.

use std::sync::Arc;

use kiln_schedule::Observation;

use super::program::{Instr, Program, Slot};
use super::{LOSS_HISTORY, TrainOptions};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::{self, Launch};
use crate::gpu::matmul_tiles::MatmulTiling;
use crate::gpu::{BufferRange, GpuContext, MapReceiver, Recorded, map_read, wait_mapped};
use crate::model::Sequential;
use crate::ops::{Loss, SgdOptions, Targets};
use kiln_schedule::Needs;

pub struct GpuStep {
    ctx: Arc<GpuContext>,
    input_width: usize,
    widths: Vec<usize>,
    loss: Loss,
    sgd_options: SgdOptions,
    params: wgpu::Buffer,
    momentum: wgpu::Buffer,
    param_len: usize,
    input: wgpu::Buffer,
    targets: wgpu::Buffer,
    acts: Vec<wgpu::Buffer>,
    forward: Vec<(Instr, Recorded)>,
    /// The batch the buffers were sized for, and the matmul tile shapes chosen for it.
    max_batch: usize,
    tiling: MatmulTiling,
    backward: Vec<(Instr, Recorded)>,
    loss_terms: Recorded,
    loss_reduce: Recorded,
    sgd: Recorded,
    history: wgpu::Buffer,
    /// ‖g‖² of every step, slot for slot with `history`.
    grad_norm_history: wgpu::Buffer,
    /// The norm passes, when clipping or a schedule needs ‖g‖².
    grad_norm: Option<GradNormPasses>,
    /// Staging buffers that carry each step's observations back, when a schedule needs them.
    observations: Vec<ObservationSlot>,
    updates: u64,
    /// Leave parameters alone on updates whose loss is not finite.
    pub skip_non_finite: bool,
    /// Batch size the batch-dependent uniforms currently hold.
    batch: usize,
    momentum_started: bool,
    /// Losses already read back, and how many more wait in `history`.
    losses: Vec<f32>,
    pending: usize,
}

struct GradNormPasses {
    partial: Recorded,
    last: Recorded,
    clip: Option<(Recorded, f32)>,
}

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
}

const OBSERVATION_RING: usize = 3;

/// Everything a recorded program binds, in one place for `bind`.
struct Buffers<'a> {
    input: &'a wgpu::Buffer,
    acts: &'a [wgpu::Buffer],
    act_grads: &'a [wgpu::Buffer],
    params: &'a wgpu::Buffer,
    grads: &'a wgpu::Buffer,
}

impl Buffers<'_> {
    fn bind(&self, slot: Slot) -> BufferRange<'_> {
        match slot {
            Slot::Input => self.input.into(),
            Slot::Act(i) => (&self.acts[i]).into(),
            Slot::ActGrad(i) => (&self.act_grads[i]).into(),
            Slot::Param { offset, len } => BufferRange::f32s(self.params, offset, len),
            Slot::Grad { offset, len } => BufferRange::f32s(self.grads, offset, len),
        }
    }
}

/// The launch of one program instruction at a batch size. A matmul's tile shape is the one
/// for `max_batch`, whatever the batch, so a short last batch keeps the recorded pipeline.
fn launch(
    instr: &Instr,
    batch: usize,
    max_batch: usize,
    tiling: &MatmulTiling,
    max_dim: u32,
) -> Result<Launch> {
    Ok(match *instr {
        Instr::Matmul {
            t, bias, m, n, k, ..
        } => kernels::matmul(
            t,
            Instr::matmul_dims(m, n, k, batch),
            bias.is_some(),
            tiling.pick(Instr::matmul_dims(m, n, k, max_batch)),
            max_dim,
        )?,
        Instr::BiasGrad { cols, .. } => kernels::bias_grad(batch, cols, max_dim),
        Instr::ActForward { act, cols, .. } => {
            kernels::activation_forward(act, batch * cols, cols, max_dim)
        }
        Instr::ActBackward { act, cols, .. } => {
            kernels::activation_backward(act, batch * cols, cols, max_dim)
        }
    })
}

impl GpuStep {
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Sequential,
        program: Program,
        options: TrainOptions,
        params: &[f32],
        needs: Needs,
    ) -> Result<Self> {
        let align = ctx.limits().min_storage_buffer_offset_alignment as usize;
        debug_assert!(
            (super::PARAM_ALIGN * 4).is_multiple_of(align),
            "WebGPU caps the alignment at 256 bytes"
        );
        let max_batch = options.max_batch;
        let widths = model.widths();
        let last = widths.len() - 1;
        let out = widths[last];

        let params_buf = ctx.upload("parameters", params)?;
        let grads = ctx.storage_buffer("gradients", params.len())?;
        let momentum_len = if options.sgd.momentum != 0.0 {
            params.len()
        } else {
            1
        };
        let momentum = ctx.storage_buffer("momentum buffers", momentum_len)?;
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

        let max_dim = ctx.max_dim();
        let tiling = ctx.matmul_tiling()?;
        let record = |launch: &Launch, buffers: &[BufferRange<'_>]| ctx.record(launch, buffers);
        let buffers = Buffers {
            input: &input,
            acts: &acts,
            act_grads: &act_grads,
            params: &params_buf,
            grads: &grads,
        };
        let record_instr = |instr: &Instr| -> Result<(Instr, Recorded)> {
            let l = launch(instr, max_batch, max_batch, &tiling, max_dim)?;
            let bound: Vec<BufferRange<'_>> = match *instr {
                Instr::Matmul {
                    a,
                    b,
                    bias,
                    c,
                    m,
                    n,
                    k,
                    ..
                } => kernels::matmul_bindings(
                    &l,
                    Instr::matmul_dims(m, n, k, max_batch),
                    buffers.bind(a),
                    buffers.bind(b),
                    bias.map(|s| buffers.bind(s)),
                    buffers.bind(c),
                    ctx.dummy(),
                ),
                Instr::BiasGrad { dy, db, .. } => vec![buffers.bind(dy), buffers.bind(db)],
                Instr::ActForward { x, y, .. } => vec![buffers.bind(x), buffers.bind(y)],
                Instr::ActBackward { x, y, dy, dx, .. } => {
                    vec![
                        buffers.bind(x),
                        buffers.bind(y),
                        buffers.bind(dy),
                        buffers.bind(dx),
                    ]
                }
            };
            Ok((*instr, record(&l, &bound)))
        };
        let forward = program
            .forward
            .iter()
            .map(record_instr)
            .collect::<Result<Vec<_>>>()?;
        let backward = program
            .backward
            .iter()
            .map(record_instr)
            .collect::<Result<Vec<_>>>()?;

        let (terms_launch, reduce_launch) =
            kernels::loss(model.loss(), max_batch * out, out, 0, max_dim);
        let loss_terms = record(
            &terms_launch,
            &[
                (&acts[last]).into(),
                (&targets).into(),
                (&terms).into(),
                (&act_grads[last]).into(),
            ],
        );
        let loss_reduce = record(&reduce_launch, &[(&terms).into(), (&history).into()]);
        let grad_norm = if options.clip_grad_norm.is_some() || needs.grad_norm {
            let (partial, last) = kernels::sum_squares(params.len(), 0);
            let partials =
                ctx.storage_buffer("gradient norm partials", kernels::norm_groups(params.len()))?;
            let clip = options.clip_grad_norm.map(|max_norm| {
                let launch = kernels::clip(params.len(), 0, max_norm, max_dim);
                (
                    record(&launch, &[(&grads).into(), (&grad_norm_history).into()]),
                    max_norm,
                )
            });
            Some(GradNormPasses {
                partial: record(&partial, &[(&grads).into(), (&partials).into()]),
                last: record(&last, &[(&partials).into(), (&grad_norm_history).into()]),
                clip,
            })
        } else {
            None
        };
        let observations = if needs.any() {
            (0..OBSERVATION_RING)
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
                })
                .collect()
        } else {
            Vec::new()
        };
        let sgd_launch = kernels::sgd(&options.sgd, 0.0, true, params.len(), max_dim);
        let sgd = record(
            &sgd_launch,
            &[
                (&params_buf).into(),
                (&grads).into(),
                (&momentum).into(),
                (&history).into(),
            ],
        );
        ctx.check_errors()?;

        Ok(GpuStep {
            input_width: model.input(),
            loss: model.loss(),
            sgd_options: options.sgd,
            param_len: params.len(),
            params: params_buf,
            momentum,
            input,
            targets,
            acts,
            forward,
            backward,
            loss_terms,
            loss_reduce,
            sgd,
            history,
            grad_norm_history,
            grad_norm,
            observations,
            updates: 0,
            skip_non_finite: false,
            batch: max_batch,
            max_batch,
            tiling,
            momentum_started: false,
            losses: Vec::new(),
            pending: 0,
            widths,
            ctx,
        })
    }

    pub fn device_name(&self) -> String {
        self.ctx.name()
    }

    fn output_width(&self) -> usize {
        *self.widths.last().expect("a model has layers")
    }

    /// Rewrites the uniforms and grids that depend on the batch size, if it changed.
    fn set_batch(&mut self, batch: usize) -> Result<()> {
        if batch == self.batch {
            return Ok(());
        }
        let max_dim = self.ctx.max_dim();
        for (instr, rec) in self.forward.iter_mut().chain(self.backward.iter_mut()) {
            let l = launch(instr, batch, self.max_batch, &self.tiling, max_dim)?;
            self.ctx.queue.write_buffer(&rec.uniform, 0, &l.uniform);
            rec.dispatch.grid = l.grid;
        }
        let out = self.output_width();
        let (terms, _) = kernels::loss(self.loss, batch * out, out, 0, max_dim);
        self.ctx
            .queue
            .write_buffer(&self.loss_terms.uniform, 0, &terms.uniform);
        self.loss_terms.dispatch.grid = terms.grid;
        self.batch = batch;
        Ok(())
    }

    pub fn step(&mut self, x: &[f32], targets: Targets, batch: usize, lr: f32) -> Result<()> {
        if self.pending == LOSS_HISTORY {
            self.flush_losses()?;
        }
        self.set_batch(batch)?;
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.input, 0, bytemuck::cast_slice(x));
        queue.write_buffer(
            &self.targets,
            0,
            bytemuck::cast_slice(&kernels::targets_as_f32(targets)),
        );
        let out = self.output_width();
        let (_, reduce) = kernels::loss(
            self.loss,
            batch * out,
            out,
            self.pending as u32,
            self.ctx.max_dim(),
        );
        queue.write_buffer(&self.loss_reduce.uniform, 0, &reduce.uniform);
        let slot = self.pending as u32;
        let mut sgd = kernels::sgd_params(
            &self.sgd_options,
            lr,
            !self.momentum_started,
            self.param_len,
        );
        if self.skip_non_finite {
            sgd.skip_slot = slot;
        }
        queue.write_buffer(&self.sgd.uniform, 0, bytemuck::bytes_of(&sgd));
        let mut norm_passes = Vec::new();
        if let Some(n) = &self.grad_norm {
            let (_, last) = kernels::sum_squares(self.param_len, slot);
            queue.write_buffer(&n.last.uniform, 0, &last.uniform);
            norm_passes.extend([&n.partial.dispatch, &n.last.dispatch]);
            if let Some((clip, max_norm)) = &n.clip {
                let launch = kernels::clip(self.param_len, slot, *max_norm, self.ctx.max_dim());
                queue.write_buffer(&clip.uniform, 0, &launch.uniform);
                norm_passes.push(&clip.dispatch);
            }
        }

        let dispatches = self
            .forward
            .iter()
            .map(|(_, r)| &r.dispatch)
            .chain([&self.loss_terms.dispatch, &self.loss_reduce.dispatch])
            .chain(self.backward.iter().map(|(_, r)| &r.dispatch))
            .chain(norm_passes)
            .chain([&self.sgd.dispatch]);
        let ring = self.observations.len();
        let observe = (ring > 0).then(|| self.updates as usize % ring);
        let with_norm = self.grad_norm.is_some();
        let (history, norms) = (&self.history, &self.grad_norm_history);
        let target = observe.map(|i| &self.observations[i].buffer);
        let index = self.ctx.submit_then(dispatches, |encoder| {
            if let Some(target) = target {
                let at = slot as u64 * 4;
                encoder.copy_buffer_to_buffer(history, at, target, 0, 4);
                if with_norm {
                    encoder.copy_buffer_to_buffer(norms, at, target, 4, 4);
                }
            }
        })?;
        if let Some(i) = observe {
            let o = &mut self.observations[i];
            o.mapped = Some(map_read(&o.buffer.slice(..)));
            o.submission = Some(index);
            o.update = self.updates;
        }
        self.momentum_started = true;
        self.pending += 1;
        self.updates += 1;
        Ok(())
    }

    /// The loss (and ‖g‖², when computed) of update `update`, one of the last few. Waits only
    /// for that update's submission, not for the steps queued behind it.
    pub fn observation(&mut self, update: u64) -> Result<Observation> {
        let ring = self.observations.len();
        let o = &mut self.observations[update as usize % ring];
        debug_assert_eq!(
            o.update, update,
            "observations are read in order, two steps late"
        );
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
        Ok(Observation {
            loss: Some(values[0] as f64),
            grad_norm_sq: self.grad_norm.is_some().then_some(values[1] as f64),
        })
    }

    /// Reads the losses waiting in the GPU history back in one transfer.
    fn flush_losses(&mut self) -> Result<()> {
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
        self.ctx
            .queue
            .write_buffer(&self.input, 0, bytemuck::cast_slice(x));
        self.ctx
            .submit(self.forward.iter().map(|(_, r)| &r.dispatch))?;
        let last = self.acts.len() - 1;
        self.ctx
            .read_back(&self.acts[last], 0, batch * self.output_width())
    }

    pub fn momentum(&self) -> Result<Option<Vec<f32>>> {
        if !self.momentum_started || self.sgd_options.momentum == 0.0 {
            return Ok(None);
        }
        self.ctx
            .read_back(&self.momentum, 0, self.param_len)
            .map(Some)
    }

    /// Continues after `steps` updates of an earlier run.
    pub fn restore(&mut self, momentum: Option<&[f32]>, steps: u64) {
        if let Some(m) = momentum {
            self.ctx
                .queue
                .write_buffer(&self.momentum, 0, bytemuck::cast_slice(m));
            self.momentum_started = true;
        }
        self.updates = steps;
    }

    pub fn parameters(&self) -> Result<Vec<f32>> {
        self.ctx.read_back(&self.params, 0, self.param_len)
    }
}
