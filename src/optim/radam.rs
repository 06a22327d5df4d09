//! torch.optim.RAdam: config, host scalars and the CPU twin of `shaders/optim/radam.wgsl`, in
//! the kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, MomentScalars, Registration, SCALAR_WORDS, Scalars, StateBlock,
    UpdateRule, check_betas, check_non_negative, next_step,
};
use crate::error::Result;
use crate::gpu::kernels::Kernel;

/// torch.optim.RAdam's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RAdam {
    /// Decay rates of the first and second moment estimates (default [0.9, 0.999]).
    pub betas: [f64; 2],
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decay the weights directly (as AdamW) instead of adding an L2 term to the gradient.
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for RAdam {
    fn default() -> Self {
        RAdam {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

const MAXIMIZE: u32 = 1;
const DECOUPLED: u32 = 2;
const RECTIFIED: u32 = 4;

/// `RAdamParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct RAdamScalars {
    moments: MomentScalars,
    bias_correction1: f32,
    lr: f32,
    eps: f32,
    bias_correction2_sqrt: f32,
    rect: f32,
    flags: u32,
    _pad: u32,
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `exp_avg`, `exp_avg_sq`.
pub static KERNEL: Kernel = super::update_kernel!("radam.wgsl", "radam", 2, moments);

pub(super) const REGISTRATION: Registration = Registration {
    name: "radam",
    default_lr: 1e-3,
    from_table: super::read_rule::<RAdam>,
};

impl UpdateRule for RAdam {
    fn name(&self) -> &'static str {
        "radam"
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
            non_negative: name == "exp_avg_sq",
            cycled: false,
        };
        vec![block("exp_avg"), block("exp_avg_sq")]
    }

    /// PyTorch's host arithmetic in f64: the bias corrections, ρ_∞ = 2/(1 − β2) − 1,
    /// ρ_t = ρ_∞ − 2·t·β2^t/(1 − β2^t), and when ρ_t > 5 the rectification
    /// r_t = ((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t))^0.5.
    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let lr = hyper.lr;
        // β1 as the schedule cycles it, the bias correction included, as PyTorch reads it.
        let [beta1, beta2] = [hyper.momentum.unwrap_or(self.betas[0]), self.betas[1]];
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;
        let rectified = rho_t > 5.0;
        let rect = if rectified {
            ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt()
        } else {
            0.0
        };
        let flags = (self.maximize as u32 * MAXIMIZE)
            | (self.decoupled_weight_decay as u32 * DECOUPLED)
            | (rectified as u32 * RECTIFIED);
        Ok(bytemuck::cast(RAdamScalars {
            moments: MomentScalars::new(lr, self.weight_decay, [beta1, beta2]),
            bias_correction1: bias_correction1 as f32,
            lr: lr as f32,
            eps: self.eps as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            rect: rect as f32,
            flags,
            _pad: 0,
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
        let s: RAdamScalars = bytemuck::cast(*scalars);
        let [exp_avg, exp_avg_sq] = state else {
            unreachable!("RAdam has two state blocks")
        };
        let moments = s
            .moments
            .moments(decay, s.flags & MAXIMIZE != 0, s.flags & DECOUPLED != 0);
        moments.for_each(param, grad, exp_avg, exp_avg_sq, |p, _, m, v| {
            let mut u = m / s.bias_correction1 * s.lr;
            if s.flags & RECTIFIED != 0 {
                let adaptive = 1.0 / (v.sqrt() + s.eps) * s.bias_correction2_sqrt;
                u = u * adaptive * s.rect;
            }
            *p -= u;
        });
    }
}
