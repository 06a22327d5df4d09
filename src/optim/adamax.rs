//! torch.optim.Adamax (Adam with the infinity norm): config, host scalars and the CPU twin of
//! `shaders/optim/adamax.wgsl`, in the kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule,
    check_betas, check_non_negative, l2_grad, lerp, maximum, next_step,
};
use crate::error::Result;
use crate::gpu::kernels::Kernel;

/// torch.optim.Adamax's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adamax {
    /// Decay rates of the first moment and of the infinity norm (default [0.9, 0.999]).
    pub betas: [f64; 2],
    /// Added to |g| before the running maximum (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Adamax {
    fn default() -> Self {
        Adamax {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `AdamaxParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamaxScalars {
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    eps: f32,
    neg_clr: f32,
    maximize: u32,
    _pad: [u32; 6],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `exp_avg`, `exp_inf`.
pub static KERNEL: Kernel = super::update_kernel!("adamax.wgsl", "adamax", 2);

pub(super) const REGISTRATION: Registration = Registration {
    name: "adamax",
    default_lr: 2e-3,
    from_table: super::read_rule::<Adamax>,
};

impl UpdateRule for Adamax {
    fn name(&self) -> &'static str {
        "adamax"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("eps", self.eps)?;
        check_betas(self.betas)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn state(&self) -> Vec<StateBlock> {
        let block = |name: &'static str| StateBlock {
            name,
            init: 0.0,
            used: true,
            non_negative: name == "exp_inf",
            cycled: false,
        };
        vec![block("exp_avg"), block("exp_inf")]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        // β1 as the schedule cycles it, the bias correction included, as PyTorch reads it.
        let beta1 = hyper.momentum.unwrap_or(self.betas[0]);
        let clr = hyper.lr / (1.0 - beta1.powf(step));
        Ok(bytemuck::cast(AdamaxScalars {
            weight_decay: self.weight_decay as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: self.betas[1] as f32,
            eps: self.eps as f32,
            neg_clr: (-clr) as f32,
            maximize: self.maximize as u32,
            _pad: [0; 6],
        }))
    }

    fn cycled_momentum(&self) -> Option<CycledMomentum> {
        Some(CycledMomentum::Beta1)
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
        let s: AdamaxScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        let [exp_avg, exp_inf] = state else {
            unreachable!("Adamax has two state blocks")
        };
        let pgmu = param
            .iter_mut()
            .zip(grad)
            .zip(exp_avg.iter_mut())
            .zip(exp_inf.iter_mut());
        for (((p, &g), m), u) in pgmu {
            let g = l2_grad(*p, g, weight_decay, s.maximize != 0);
            *m = lerp(*m, g, s.one_minus_beta1);
            *u = maximum(*u * s.beta2, g.abs() + s.eps);
            *p += s.neg_clr * *m / *u;
        }
    }
}
