//! The training step on the CPU device: the step's program interpreted over host vectors with
//! the CPU twins of the kernels.

use std::time::Instant;

use super::profile::{GATHER, KernelTime, ProfileMode, WHOLE_UPDATE};
use super::program::{Epilogue, Instr, Program, Slot};
use super::{OptimizerSnapshot, TrainOptions};
use crate::cpu;
use crate::error::Result;
use crate::model::{ParamLayout, Sequential};
use crate::ops::{Loss, Targets};
use crate::optim::{self, Hyper, Optimizer, Scalars};
use kiln_schedule::{Needs, Observation};

pub struct CpuStep {
    program: Program,
    input_width: usize,
    /// Width of each layer's output.
    widths: Vec<usize>,
    loss: Loss,
    optimizer: Optimizer,
    no_decay: Vec<[u32; 2]>,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// The optimizer's state blocks in its binding order; unused ones are empty.
    state: Vec<Vec<f32>>,
    scalars: Scalars,
    acts: Vec<Vec<f32>>,
    act_grads: Vec<Vec<f32>>,
    losses: Vec<f32>,
    /// Leave parameters alone on updates whose loss is not finite.
    pub skip_non_finite: bool,
    /// The update number of `losses[0]` (non-zero after a resume).
    first_update: u64,
    /// ‖g‖² of every update, when clipping or a schedule needs it.
    grad_norms: Option<Vec<f32>>,
    /// Data loaded with `Trainer::load_data`, and the buffers batches are gathered into.
    data: Option<HostData>,
    gathered: (Vec<f32>, Vec<f32>),
    /// Rows `Trainer::load_validation` gave.
    validation: Option<Vec<f32>>,
    /// How to time the next update, when a profile was asked for; then its times.
    profile: Option<ProfileMode>,
    profiled: Option<Vec<KernelTime>>,
}

/// A data set held for `Trainer::step_data`: inputs, targets as f32, the batch order.
struct HostData {
    x: Vec<f32>,
    y: Vec<f32>,
    /// Target values per row.
    cols: usize,
    order: Vec<u32>,
}

/// What one step is given: its batch and the schedule's values.
struct StepInput<'a> {
    x: &'a [f32],
    targets: Targets<'a>,
    rows: usize,
    hyper: Hyper,
}

impl CpuStep {
    pub fn new(
        model: &Sequential,
        layout: &ParamLayout,
        program: Program,
        options: &TrainOptions,
        params: Vec<f32>,
        needs: Needs,
    ) -> Self {
        let widths = model.widths();
        let sized = |w: &usize| vec![0.0; options.max_batch * w];
        let optimizer = options.optimizer.clone();
        let optim::State { scalars, blocks } = optimizer.new_state(params.len());
        CpuStep {
            program,
            input_width: model.input(),
            acts: widths.iter().map(sized).collect(),
            act_grads: widths.iter().map(sized).collect(),
            widths,
            loss: model.loss(),
            no_decay: optimizer.no_decay_ranges(layout),
            scalars,
            optimizer,
            grads: vec![0.0; params.len()],
            state: blocks,
            params,
            losses: Vec::new(),
            first_update: 0,
            skip_non_finite: false,
            grad_norms: (options.clip_grad_norm.is_some() || needs.grad_norm).then(Vec::new),
            data: None,
            gathered: (Vec::new(), Vec::new()),
            validation: None,
            profile: None,
            profiled: None,
        }
    }

    /// Times the next update as `mode` says (see `Trainer::profile`).
    pub fn profile_next(&mut self, mode: ProfileMode) {
        self.profile = Some(mode);
        self.profiled = None;
    }

    /// The times of the update profiled since `profile_next`, if one ran.
    pub fn take_profile(&mut self) -> Option<Vec<KernelTime>> {
        self.profile = None;
        self.profiled.take()
    }

    pub fn step(&mut self, source: super::Batch<'_>, rows: usize, hyper: Hyper) -> Result<()> {
        let Some(mode) = self.profile.take() else {
            return self.step_timed(source, rows, hyper, None);
        };
        let start = Instant::now();
        let mut times = Vec::new();
        let kernels = (mode == ProfileMode::Kernels).then_some(&mut times);
        self.step_timed(source, rows, hyper, kernels)?;
        if mode == ProfileMode::Update {
            times.push(KernelTime::new(WHOLE_UPDATE, start.elapsed().as_secs_f64()));
        }
        self.profiled = Some(times);
        Ok(())
    }

    /// The step, with each kernel's wall time pushed onto `kernels` when given.
    fn step_timed(
        &mut self,
        source: super::Batch<'_>,
        rows: usize,
        hyper: Hyper,
        mut kernels: Option<&mut Vec<KernelTime>>,
    ) -> Result<()> {
        match source {
            super::Batch::Host { x, targets } => self.step_on(x, targets, rows, hyper, kernels),
            super::Batch::Uploaded => Err(crate::error::KilnError::Gpu(
                "internal: a batch uploaded to a GPU reached the CPU device".into(),
            )),
            super::Batch::Resident { start } => {
                let gather_start = Instant::now();
                // The rows gathered from the loaded data, as a GPU step gathers them.
                let data = self
                    .data
                    .as_ref()
                    .expect("the trainer checks data is loaded");
                let (f, k) = (self.input_width, data.cols);
                let mut x = std::mem::take(&mut self.gathered.0);
                let mut y = std::mem::take(&mut self.gathered.1);
                x.clear();
                y.clear();
                for &r in &data.order[start..start + rows] {
                    let r = r as usize;
                    x.extend_from_slice(&data.x[r * f..(r + 1) * f]);
                    y.extend_from_slice(&data.y[r * k..(r + 1) * k]);
                }
                let labels: Vec<u32>;
                let targets = if self.loss == Loss::CrossEntropy {
                    labels = y.iter().map(|&l| l as u32).collect();
                    Targets::Classes(&labels)
                } else {
                    Targets::Values(&y)
                };
                if let Some(k) = kernels.as_deref_mut() {
                    k.push(KernelTime::new(
                        GATHER,
                        gather_start.elapsed().as_secs_f64(),
                    ));
                }
                let result = self.step_on(&x, targets, rows, hyper, kernels);
                self.gathered = (x, y);
                result
            }
        }
    }

    pub fn load_data(&mut self, x: &[f32], y: &[f32], rows: usize) {
        self.data = Some(HostData {
            x: x.to_vec(),
            y: y.to_vec(),
            cols: y.len() / rows,
            order: Vec::new(),
        });
    }

    pub fn load_validation(&mut self, x: &[f32]) {
        self.validation = Some(x.to_vec());
    }

    /// The outputs for the loaded validation rows, in chunks of `max_batch` rows as the GPU
    /// takes them.
    pub fn predict_validation(&mut self, max_batch: usize) -> Result<Vec<f32>> {
        let x = self
            .validation
            .take()
            .expect("the trainer checks validation rows are loaded");
        let width = self.input_width;
        let result = x
            .chunks(max_batch * width)
            .map(|chunk| self.predict(chunk, chunk.len() / width))
            .collect::<Result<Vec<_>>>();
        self.validation = Some(x);
        Ok(result?.concat())
    }

    pub fn set_order(&mut self, order: &[u32]) {
        if let Some(d) = &mut self.data {
            d.order = order.to_vec();
        }
    }

    fn step_on(
        &mut self,
        x: &[f32],
        targets: Targets,
        rows: usize,
        hyper: Hyper,
        mut kernels: Option<&mut Vec<KernelTime>>,
    ) -> Result<()> {
        let batch = StepInput {
            x,
            targets,
            rows,
            hyper,
        };
        // Indexed: `Instr` is Copy, and iterating `self.program` would hold a borrow `exec`
        // needs mutably.
        for i in 0..self.program.step.len() {
            let instr = self.program.step[i];
            let start = Instant::now();
            self.exec(&instr, &batch)?;
            if let Some(k) = kernels.as_deref_mut() {
                let seconds = start.elapsed().as_secs_f64();
                k.push(KernelTime::of(
                    &instr,
                    rows,
                    self.optimizer.name(),
                    None,
                    seconds,
                ));
            }
        }
        Ok(())
    }

    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let batch = StepInput {
            x,
            targets: Targets::Values(&[]),
            rows,
            hyper: Hyper::lr(0.0),
        };
        for i in 0..self.program.forward.len() {
            let instr = self.program.forward[i];
            self.exec(&instr, &batch)?;
        }
        let last = self.widths.len() - 1;
        Ok(self.acts[last][..rows * self.widths[last]].to_vec())
    }

    /// The loss (and ‖g‖², when computed) of update `update`.
    pub fn observation(&self, update: u64) -> Option<Observation> {
        let t = update.checked_sub(self.first_update)? as usize;
        Some(Observation {
            loss: Some(*self.losses.get(t)? as f64),
            grad_norm_sq: match &self.grad_norms {
                Some(n) => Some(*n.get(t)? as f64),
                None => None,
            },
        })
    }

    /// The optimizer's scalar state and every state block in its binding order (unused
    /// blocks empty).
    pub fn optimizer_state(&self) -> OptimizerSnapshot {
        (self.scalars.clone(), self.state.clone())
    }

    /// Continues after `steps` updates of an earlier run with the optimizer state it had
    /// (every block in binding order, checked by the trainer; losses are kept from here on,
    /// at their update numbers).
    pub fn restore(&mut self, scalars: Scalars, blocks: Vec<Vec<f32>>, steps: u64) {
        self.state = blocks;
        self.scalars = scalars;
        self.first_update = steps;
    }

    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    pub fn parameters(&self) -> &[f32] {
        &self.params
    }

    pub fn set_parameters(&mut self, params: &[f32]) {
        self.params.copy_from_slice(params);
    }

    /// The elements of `slot` for a batch of `rows` rows whose input is `x`.
    fn get<'a>(&'a self, slot: Slot, rows: usize, x: &'a [f32]) -> &'a [f32] {
        match slot {
            Slot::Input => &x[..rows * self.input_width],
            Slot::Act(i) => &self.acts[i][..rows * self.widths[i]],
            Slot::ActGrad(i) => &self.act_grads[i][..rows * self.widths[i]],
            Slot::Param { offset, len } => &self.params[offset..offset + len],
            Slot::Grad { offset, len } => &self.grads[offset..offset + len],
        }
    }

    /// Runs one instruction. A kernel's output vector is taken out while its inputs are
    /// borrowed; no kernel reads the vector it writes.
    fn exec(&mut self, instr: &Instr, b: &StepInput<'_>) -> Result<()> {
        let rows = b.rows;
        // The CPU runs the program unfused (`Trainer::new`): the GPU's fused products are
        // held to these separate instructions.
        if let Instr::Matmul { epilogue, .. } = instr
            && *epilogue != Epilogue::None
        {
            return Err(crate::error::KilnError::Gpu(
                "internal: a fused product reached the CPU device".into(),
            ));
        }
        let out_slot = match *instr {
            Instr::Matmul { c, .. } => c,
            Instr::BiasGrad { db, .. } => db,
            Instr::ActForward { y, .. } => y,
            Instr::ActBackward { dx, .. } => dx,
            Instr::Loss { last, cols } => {
                let n = rows * cols;
                let value = cpu::loss::loss(
                    self.loss,
                    &self.acts[last][..n],
                    b.targets,
                    cols,
                    &mut self.act_grads[last][..n],
                );
                self.losses.push(value);
                return Ok(());
            }
            Instr::GradNorm => {
                let norm_sq = cpu::norm::sum_squares(&self.grads);
                if let Some(norms) = &mut self.grad_norms {
                    norms.push(norm_sq);
                }
                return Ok(());
            }
            Instr::Clip { max_norm } => {
                let norms = self.grad_norms.as_ref();
                let norm_sq = *norms.and_then(|n| n.last()).expect("GradNorm runs first");
                cpu::norm::clip(&mut self.grads, norm_sq, max_norm);
                return Ok(());
            }
            Instr::Update => {
                // The scalars advance whether or not the update is skipped, as on the GPU,
                // which cannot know without a read-back.
                let scalars = self.optimizer.rule().scalars(b.hyper, &mut self.scalars)?;
                let loss = *self.losses.last().expect("Loss runs before Update");
                if self.skip_non_finite && !loss.is_finite() {
                    return Ok(());
                }
                optim::update_arena(
                    self.optimizer.rule(),
                    &scalars,
                    &self.no_decay,
                    &mut self.params,
                    &self.grads,
                    &mut self.state,
                );
                return Ok(());
            }
        };
        let (mut out, range) = match out_slot {
            Slot::Act(i) => (std::mem::take(&mut self.acts[i]), 0..rows * self.widths[i]),
            Slot::ActGrad(i) => (
                std::mem::take(&mut self.act_grads[i]),
                0..rows * self.widths[i],
            ),
            Slot::Grad { offset, len } => (std::mem::take(&mut self.grads), offset..offset + len),
            Slot::Input | Slot::Param { .. } => {
                unreachable!("programs never write inputs or parameters")
            }
        };
        let dst = &mut out[range];
        let x = b.x;
        match *instr {
            Instr::Matmul {
                t,
                a,
                b,
                bias,
                m,
                n,
                k,
                ..
            } => {
                let dims = Instr::matmul_dims(m, n, k, rows);
                let bias = bias.map(|s| self.get(s, rows, x));
                cpu::matmul::matmul(
                    self.get(a, rows, x),
                    self.get(b, rows, x),
                    bias,
                    dst,
                    dims,
                    t,
                );
            }
            Instr::BiasGrad { dy, cols, .. } => {
                cpu::bias::bias_grad(self.get(dy, rows, x), rows, cols, dst)
            }
            Instr::ActForward {
                act, x: src, cols, ..
            } => cpu::activation::forward(act, self.get(src, rows, x), cols, dst),
            Instr::ActBackward {
                act,
                x: src,
                y,
                dy,
                cols,
                ..
            } => cpu::activation::backward(
                act,
                self.get(src, rows, x),
                self.get(y, rows, x),
                self.get(dy, rows, x),
                cols,
                dst,
            ),
            Instr::Loss { .. } | Instr::GradNorm | Instr::Clip { .. } | Instr::Update => {
                unreachable!("handled above")
            }
        }
        match out_slot {
            Slot::Act(i) => self.acts[i] = out,
            Slot::ActGrad(i) => self.act_grads[i] = out,
            _ => self.grads = out,
        }
        Ok(())
    }
}
