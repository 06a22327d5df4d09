//! torch.optim.Adadelta: config, host scalars and the CPU twin of `shaders/optim/adadelta.wgsl`,
//! in the kernel's order of operations.

use serde::Deserialize;

use super::{
    Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule, check_non_negative,
    l2_grad, next_step,
};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::Kernel;

/// torch.optim.Adadelta's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adadelta {
    /// Decay rate of the running averages of g² and of the squared steps (default 0.9).
    pub rho: f64,
    /// Added inside both square roots (default 1e-6).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta {
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `AdadeltaParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdadeltaScalars {
    neg_lr: f32,
    rho: f32,
    one_minus_rho: f32,
    eps: f32,
    weight_decay: f32,
    maximize: u32,
    _pad: [u32; 6],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `square_avg`,
/// `acc_delta`.
pub static KERNEL: Kernel = super::update_kernel!("adadelta.wgsl", "adadelta", 2);

pub(super) const REGISTRATION: Registration = Registration {
    name: "adadelta",
    default_lr: 1.0,
    from_table: super::read_rule::<Adadelta>,
};

impl UpdateRule for Adadelta {
    fn name(&self) -> &'static str {
        "adadelta"
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.rho) {
            return Err(KilnError::invalid(
                "optimizer.rho",
                format!("must be in [0, 1], got {}", self.rho),
            ));
        }
        check_non_negative("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn state(&self) -> Vec<StateBlock> {
        let block = |name: &'static str| StateBlock {
            name,
            init: 0.0,
            used: true,
            non_negative: true,
            cycled: false,
        };
        vec![block("square_avg"), block("acc_delta")]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        next_step(scalars)?;
        Ok(bytemuck::cast(AdadeltaScalars {
            neg_lr: (-hyper.lr) as f32,
            rho: self.rho as f32,
            one_minus_rho: (1.0 - self.rho) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            maximize: self.maximize as u32,
            _pad: [0; 6],
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
        let s: AdadeltaScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        let [square_avg, acc_delta] = state else {
            unreachable!("Adadelta has two state blocks")
        };
        let pgsd = param
            .iter_mut()
            .zip(grad)
            .zip(square_avg.iter_mut())
            .zip(acc_delta.iter_mut());
        for (((p, &g), sq), acc) in pgsd {
            let g = l2_grad(*p, g, weight_decay, s.maximize != 0);
            *sq = *sq * s.rho + s.one_minus_rho * g * g;
            let std = (*sq + s.eps).sqrt();
            let delta = (*acc + s.eps).sqrt() / std * g;
            *acc = *acc * s.rho + s.one_minus_rho * delta * delta;
            *p += s.neg_lr * delta;
        }
    }
}
