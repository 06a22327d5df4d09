//! torch.optim.NAdam: config, host scalars and the CPU twin of `shaders/optim/nadam.wgsl`, in
//! the kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, MomentScalars, Registration, SCALAR_WORDS, Scalars, StateBlock,
    UpdateRule, check_betas, check_non_negative, next_step, scalar_mut,
};
use crate::error::Result;
use crate::gpu::kernels::Kernel;

/// torch.optim.NAdam's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NAdam {
    /// Decay rates of the first and second moment estimates (default [0.9, 0.999]).
    pub betas: [f64; 2],
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Momentum decay ψ of the μ schedule (default 4e-3).
    pub momentum_decay: f64,
    /// Decay the weights directly (as AdamW) instead of adding an L2 term to the gradient.
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for NAdam {
    fn default() -> Self {
        NAdam {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// `NAdamParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct NAdamScalars {
    moments: MomentScalars,
    bias_correction2: f32,
    eps: f32,
    grad_coef: f32,
    avg_coef: f32,
    maximize: u32,
    decoupled: u32,
    _pad: u32,
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `exp_avg`, `exp_avg_sq`.
pub static KERNEL: Kernel = super::update_kernel!("nadam.wgsl", "nadam", 2, moments);

pub(super) const REGISTRATION: Registration = Registration {
    name: "nadam",
    default_lr: 2e-3,
    from_table: super::read_rule::<NAdam>,
};

impl UpdateRule for NAdam {
    fn name(&self) -> &'static str {
        "nadam"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("eps", self.eps)?;
        check_betas(self.betas)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("momentum_decay", self.momentum_decay)
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

    /// PyTorch keeps `mu_product` as a float32 tensor: each step multiplies it by μ_t in
    /// float32, and reads it back into float64 for the coefficients.
    fn initial_scalars(&self) -> Scalars {
        Scalars::from([("step".to_string(), 0.0), ("mu_product".to_string(), 1.0)])
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let lr = hyper.lr;
        // β1 as the schedule cycles it: PyTorch's μ_t, and so mu_product, take this update's.
        let [beta1, beta2] = [hyper.momentum.unwrap_or(self.betas[0]), self.betas[1]];
        let bias_correction2 = 1.0 - beta2.powf(step);
        let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(step * self.momentum_decay));
        let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((step + 1.0) * self.momentum_decay));
        let product = scalar_mut(scalars, "mu_product")?;
        *product = ((*product as f32) * (mu as f32)) as f64;
        let mu_product = *product;
        let mu_product_next = mu_product * mu_next;
        Ok(bytemuck::cast(NAdamScalars {
            moments: MomentScalars::new(lr, self.weight_decay, [beta1, beta2]),
            bias_correction2: bias_correction2 as f32,
            eps: self.eps as f32,
            grad_coef: (-lr * (1.0 - mu) / (1.0 - mu_product)) as f32,
            avg_coef: ((-lr * mu_next) / (1.0 - mu_product_next)) as f32,
            maximize: self.maximize as u32,
            decoupled: self.decoupled_weight_decay as u32,
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
        let s: NAdamScalars = bytemuck::cast(*scalars);
        let [exp_avg, exp_avg_sq] = state else {
            unreachable!("NAdam has two state blocks")
        };
        let moments = s.moments.moments(decay, s.maximize != 0, s.decoupled != 0);
        moments.for_each(param, grad, exp_avg, exp_avg_sq, |p, g, m, v| {
            let denom = (v / s.bias_correction2).sqrt() + s.eps;
            *p += s.grad_coef * g / denom;
            *p += s.avg_coef * m / denom;
        });
    }
}
