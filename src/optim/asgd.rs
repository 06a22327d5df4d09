//! torch.optim.ASGD (averaged SGD): config, host scalars and the CPU twin of
//! `shaders/optim/asgd.wgsl`, in the kernel's order of operations.
//!
//! The step size η and the averaging weight μ are PyTorch's per-parameter scalar tensors (the
//! same for every parameter): float32 values kept on the host beside `step`, computed in f64
//! after each update from that update's rate, as PyTorch's Python does.

use serde::Deserialize;

use super::{
    Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule, check_non_negative,
    l2_grad, next_step, scalar_mut,
};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::Kernel;

/// torch.optim.ASGD's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Asgd {
    /// Decay term λ (default 1e-4).
    pub lambd: f64,
    /// Power of the step-size decay (default 0.75).
    pub alpha: f64,
    /// The update from which the average starts (default 1e6).
    pub t0: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Asgd {
    fn default() -> Self {
        Asgd {
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `AsgdParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AsgdScalars {
    /// 1 − λ·η, rounded to f32 as PyTorch's `mul_` takes it.
    decay: f32,
    neg_eta: f32,
    mu: f32,
    weight_decay: f32,
    maximize: u32,
    /// μ = 1: the average is the parameter (PyTorch's `ax.copy_(param)`).
    copy_average: u32,
    _pad: [u32; 6],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `ax`.
pub static KERNEL: Kernel = super::update_kernel!("asgd.wgsl", "asgd", 1);

pub(super) const REGISTRATION: Registration = Registration {
    name: "asgd",
    default_lr: 1e-2,
    from_table: super::read_rule::<Asgd>,
};

impl UpdateRule for Asgd {
    fn name(&self) -> &'static str {
        "asgd"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("lambd", self.lambd)?;
        check_non_negative("alpha", self.alpha)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if !self.t0.is_finite() {
            return Err(KilnError::invalid(
                "optimizer.t0",
                format!("must be finite, got {}", self.t0),
            ));
        }
        Ok(())
    }

    fn state(&self) -> Vec<StateBlock> {
        vec![StateBlock {
            name: "ax",
            init: 0.0,
            used: true,
            non_negative: false,
            cycled: false,
        }]
    }

    /// `eta` is set from the first update's rate by that update (PyTorch's state
    /// initialisation), `mu` starts at 1.
    fn initial_scalars(&self) -> Scalars {
        Scalars::from([
            ("step".to_string(), 0.0),
            ("eta".to_string(), 0.0),
            ("mu".to_string(), 1.0),
        ])
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let lr = hyper.lr;
        if step == 1.0 {
            scalars.insert("eta".into(), lr as f32 as f64);
        }
        let (eta, mu) = (*scalar_mut(scalars, "eta")?, *scalar_mut(scalars, "mu")?);
        let words = bytemuck::cast(AsgdScalars {
            decay: (1.0 - self.lambd * eta) as f32,
            neg_eta: (-eta) as f32,
            mu: mu as f32,
            weight_decay: self.weight_decay as f32,
            maximize: self.maximize as u32,
            copy_average: (mu == 1.0) as u32,
            _pad: [0; 6],
        });
        // The next update's, from this one's rate and count, as float32 tensors hold them.
        let next_eta = lr / (1.0 + self.lambd * lr * step).powf(self.alpha);
        let next_mu = 1.0 / (step - self.t0).max(1.0);
        scalars.insert("eta".into(), next_eta as f32 as f64);
        scalars.insert("mu".into(), next_mu as f32 as f64);
        Ok(words)
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
        let s: AsgdScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        for ((p, &g), ax) in param.iter_mut().zip(grad).zip(state[0].iter_mut()) {
            let g = l2_grad(*p, g, weight_decay, s.maximize != 0);
            let decayed = *p * s.decay;
            *p = decayed + s.neg_eta * g;
            *ax = if s.copy_average != 0 {
                *p
            } else {
                *ax + (*p - *ax) * s.mu
            };
        }
    }
}
