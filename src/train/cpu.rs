//! The training step on the CPU device: the step's program interpreted over host vectors with
//! the CPU twins of the kernels.

use super::TrainOptions;
use super::program::{Instr, Program, Slot};
use crate::cpu;
use crate::model::Sequential;
use crate::ops::{Loss, SgdOptions, Targets};
use kiln_schedule::{Needs, Observation};

pub struct CpuStep {
    program: Program,
    input_width: usize,
    /// Width of each layer's output.
    widths: Vec<usize>,
    loss: Loss,
    sgd: SgdOptions,
    params: Vec<f32>,
    grads: Vec<f32>,
    momentum: Vec<f32>,
    momentum_started: bool,
    acts: Vec<Vec<f32>>,
    act_grads: Vec<Vec<f32>>,
    losses: Vec<f32>,
    /// Leave parameters alone on updates whose loss is not finite.
    pub skip_non_finite: bool,
    /// The update number of `losses[0]` (non-zero after a resume).
    first_update: u64,
    clip_grad_norm: Option<f32>,
    /// ‖g‖² of every update, when clipping or a schedule needs it.
    grad_norms: Option<Vec<f32>>,
}

impl CpuStep {
    pub fn new(
        model: &Sequential,
        program: Program,
        options: TrainOptions,
        params: Vec<f32>,
        needs: Needs,
    ) -> Self {
        let widths = model.widths();
        let sized = |w: &usize| vec![0.0; options.max_batch * w];
        CpuStep {
            program,
            input_width: model.input(),
            acts: widths.iter().map(sized).collect(),
            act_grads: widths.iter().map(sized).collect(),
            widths,
            loss: model.loss(),
            sgd: options.sgd,
            grads: vec![0.0; params.len()],
            momentum: vec![0.0; params.len()],
            momentum_started: false,
            params,
            losses: Vec::new(),
            first_update: 0,
            skip_non_finite: false,
            clip_grad_norm: options.clip_grad_norm,
            grad_norms: (options.clip_grad_norm.is_some() || needs.grad_norm).then(Vec::new),
        }
    }

    pub fn step(&mut self, x: &[f32], targets: Targets, batch: usize, lr: f32) {
        self.forward(x, batch);
        let last = self.widths.len() - 1;
        let cols = self.widths[last];
        let n = batch * cols;
        let mut grad = std::mem::take(&mut self.act_grads[last]);
        let value = cpu::loss::loss(
            self.loss,
            &self.acts[last][..n],
            targets,
            cols,
            &mut grad[..n],
        );
        self.act_grads[last] = grad;
        self.losses.push(value);
        for i in 0..self.program.backward.len() {
            let instr = self.program.backward[i];
            self.exec(&instr, batch, x);
        }
        if let Some(norms) = &mut self.grad_norms {
            let norm_sq = cpu::norm::sum_squares(&self.grads);
            norms.push(norm_sq);
            if let Some(max_norm) = self.clip_grad_norm {
                cpu::norm::clip(&mut self.grads, norm_sq, max_norm);
            }
        }
        if self.skip_non_finite && !value.is_finite() {
            return;
        }
        cpu::sgd::sgd(
            &self.sgd,
            lr,
            !self.momentum_started,
            &mut self.params,
            &self.grads,
            &mut self.momentum,
        );
        self.momentum_started = true;
    }

    pub fn predict(&mut self, x: &[f32], batch: usize) -> Vec<f32> {
        self.forward(x, batch);
        let last = self.widths.len() - 1;
        self.acts[last][..batch * self.widths[last]].to_vec()
    }

    /// The loss (and ‖g‖², when computed) of update `update`.
    pub fn observation(&self, update: u64) -> Observation {
        let t = (update - self.first_update) as usize;
        Observation {
            loss: Some(self.losses[t] as f64),
            grad_norm_sq: self.grad_norms.as_ref().map(|n| n[t] as f64),
        }
    }

    pub fn momentum(&self) -> Option<&[f32]> {
        self.momentum_started.then_some(&self.momentum[..])
    }

    /// Continues after `steps` updates of an earlier run (losses are kept from here on, at
    /// their update numbers).
    pub fn restore(&mut self, momentum: Option<Vec<f32>>, steps: u64) {
        if let Some(m) = momentum {
            self.momentum = m;
            self.momentum_started = true;
        }
        self.first_update = steps;
    }

    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    pub fn parameters(&self) -> &[f32] {
        &self.params
    }

    fn forward(&mut self, x: &[f32], batch: usize) {
        // Indexed: `Instr` is Copy, and iterating `self.program` would hold a borrow `exec`
        // needs mutably.
        for i in 0..self.program.forward.len() {
            let instr = self.program.forward[i];
            self.exec(&instr, batch, x);
        }
    }

    /// The elements of `slot` for a batch of `batch` rows whose input is `x`.
    fn get<'a>(&'a self, slot: Slot, batch: usize, x: &'a [f32]) -> &'a [f32] {
        match slot {
            Slot::Input => &x[..batch * self.input_width],
            Slot::Act(i) => &self.acts[i][..batch * self.widths[i]],
            Slot::ActGrad(i) => &self.act_grads[i][..batch * self.widths[i]],
            Slot::Param { offset, len } => &self.params[offset..offset + len],
            Slot::Grad { offset, len } => &self.grads[offset..offset + len],
        }
    }

    /// Runs one instruction. Its output vector is taken out while the inputs are borrowed;
    /// no instruction reads the vector it writes.
    fn exec(&mut self, instr: &Instr, batch: usize, x: &[f32]) {
        let out_slot = match *instr {
            Instr::Matmul { c, .. } => c,
            Instr::BiasGrad { db, .. } => db,
            Instr::ActForward { y, .. } => y,
            Instr::ActBackward { dx, .. } => dx,
        };
        let (mut out, range) = match out_slot {
            Slot::Act(i) => (std::mem::take(&mut self.acts[i]), 0..batch * self.widths[i]),
            Slot::ActGrad(i) => (
                std::mem::take(&mut self.act_grads[i]),
                0..batch * self.widths[i],
            ),
            Slot::Grad { offset, len } => (std::mem::take(&mut self.grads), offset..offset + len),
            Slot::Input | Slot::Param { .. } => {
                unreachable!("programs never write inputs or parameters")
            }
        };
        let dst = &mut out[range];
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
                let dims = Instr::matmul_dims(m, n, k, batch);
                let bias = bias.map(|s| self.get(s, batch, x));
                cpu::matmul::matmul(
                    self.get(a, batch, x),
                    self.get(b, batch, x),
                    bias,
                    dst,
                    dims,
                    t,
                );
            }
            Instr::BiasGrad { dy, cols, .. } => {
                cpu::bias::bias_grad(self.get(dy, batch, x), batch, cols, dst)
            }
            Instr::ActForward {
                act, x: src, cols, ..
            } => cpu::activation::forward(act, self.get(src, batch, x), cols, dst),
            Instr::ActBackward {
                act,
                x: src,
                y,
                dy,
                cols,
                ..
            } => cpu::activation::backward(
                act,
                self.get(src, batch, x),
                self.get(y, batch, x),
                self.get(dy, batch, x),
                cols,
                dst,
            ),
        }
        match out_slot {
            Slot::Act(i) => self.acts[i] = out,
            Slot::ActGrad(i) => self.act_grads[i] = out,
            _ => self.grads = out,
        }
    }
}
