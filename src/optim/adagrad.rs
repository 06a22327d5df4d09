//! torch.optim.Adagrad: config, host scalars and the CPU twin of `shaders/optim/adagrad.wgsl`,
//! in the kernel's order of operations.

use serde::Deserialize;

use super::{
    Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule, check_non_negative,
    l2_grad, next_step,
};
use crate::error::Result;
use crate::gpu::kernels::Kernel;

/// torch.optim.Adagrad's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adagrad {
    /// Decay of the rate with the step: `lr / (1 + (step − 1)·lr_decay)` (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (default 1e-10).
    pub eps: f64,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad {
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

/// `AdagradParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdagradScalars {
    neg_clr: f32,
    eps: f32,
    weight_decay: f32,
    maximize: u32,
    _pad: [u32; 8],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `sum`.
pub static KERNEL: Kernel = super::update_kernel!("adagrad.wgsl", "adagrad", 1);

pub(super) const REGISTRATION: Registration = Registration {
    name: "adagrad",
    default_lr: 1e-2,
    from_table: super::read_rule::<Adagrad>,
};

impl UpdateRule for Adagrad {
    fn name(&self) -> &'static str {
        "adagrad"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("lr_decay", self.lr_decay)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        check_non_negative("eps", self.eps)
    }

    fn state(&self) -> Vec<StateBlock> {
        vec![StateBlock {
            name: "sum",
            init: self.initial_accumulator_value as f32,
            used: true,
            non_negative: true,
            cycled: false,
        }]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let clr = hyper.lr / (1.0 + (step - 1.0) * self.lr_decay);
        Ok(bytemuck::cast(AdagradScalars {
            neg_clr: (-clr) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            maximize: self.maximize as u32,
            _pad: [0; 8],
        }))
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn kernel(&self) -> &'static Kernel {
        &KERNEL
    }

    fn update_cpu(
        &self,
        scalars: &[u32; SCALAR_WORDS],
        decay: bool,
        param: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
    ) {
        let s: AdagradScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        for ((p, &g), sum) in param.iter_mut().zip(grad).zip(state[0].iter_mut()) {
            let g = l2_grad(*p, g, weight_decay, s.maximize != 0);
            let acc = *sum + g * g;
            *sum = acc;
            *p += s.neg_clr * g / (acc.sqrt() + s.eps);
        }
    }
}
