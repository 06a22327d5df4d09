//! torch.optim.SGD: config, host scalars and the CPU twin of `shaders/optim/sgd.wgsl`, in the
//! kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule,
    check_non_negative, l2_grad, next_step,
};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::Kernel;

/// torch.optim.SGD's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sgd {
    /// Momentum factor μ (default 0).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// `SgdParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdScalars {
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    maximize: u32,
    first_step: u32,
    /// PyTorch's `momentum != 0`, decided on the f64 value: a momentum below f32's smallest
    /// still keeps the buffer (its f32 product is 0 then, as in PyTorch's `mul_`).
    use_momentum: u32,
    _pad: [u32; 4],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `momentum_buffer`.
pub static KERNEL: Kernel = super::update_kernel!("sgd.wgsl", "sgd", 1);

pub(super) const REGISTRATION: Registration = Registration {
    name: "sgd",
    default_lr: 1e-3,
    from_table: super::read_rule::<Sgd>,
};

impl UpdateRule for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("momentum", self.momentum)?;
        check_non_negative("dampening", self.dampening)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(KilnError::invalid(
                "optimizer.nesterov",
                "Nesterov momentum requires a momentum > 0 and zero dampening",
            ));
        }
        Ok(())
    }

    fn state(&self) -> Vec<StateBlock> {
        vec![StateBlock {
            name: "momentum_buffer",
            init: 0.0,
            used: self.momentum != 0.0,
            non_negative: false,
            cycled: true,
        }]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let momentum = hyper.momentum.unwrap_or(self.momentum);
        Ok(bytemuck::cast(SgdScalars {
            lr: hyper.lr as f32,
            momentum: momentum as f32,
            dampening: self.dampening as f32,
            weight_decay: self.weight_decay as f32,
            nesterov: self.nesterov as u32,
            maximize: self.maximize as u32,
            first_step: (step == 1.0) as u32,
            use_momentum: (momentum != 0.0) as u32,
            _pad: [0; 4],
        }))
    }

    fn cycled_momentum(&self) -> Option<CycledMomentum> {
        Some(CycledMomentum::Momentum)
    }

    /// PyTorch starts the buffer as an undampened copy of the gradient at the first update
    /// whose momentum is not 0; Kiln starts it at the first update. With a dampening the two
    /// would part ways if that is not the first.
    fn refuse_first_momentum(&self, momentum: f64) -> Option<String> {
        (momentum == 0.0 && self.dampening != 0.0).then(|| {
            "with a dampening, the cycle must not start at momentum 0 (max_momentum)".into()
        })
    }

    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    fn kernel(&self) -> &'static Kernel {
        &KERNEL
    }

    /// Written as zipped iterators, without indexing, so the compiler can vectorise it.
    fn update_cpu(
        &self,
        scalars: &[u32; SCALAR_WORDS],
        decay: bool,
        param: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
    ) {
        let s: SgdScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        let decayed = |p: f32, g: f32| l2_grad(p, g, weight_decay, s.maximize != 0);
        if s.use_momentum == 0 {
            for (p, &g) in param.iter_mut().zip(grad) {
                *p -= s.lr * decayed(*p, g);
            }
            return;
        }
        for ((p, &g), buf) in param.iter_mut().zip(grad).zip(state[0].iter_mut()) {
            let g = decayed(*p, g);
            let b = if s.first_step != 0 {
                g
            } else {
                s.momentum * *buf + (1.0 - s.dampening) * g
            };
            *buf = b;
            let g = if s.nesterov != 0 {
                g + s.momentum * b
            } else {
                b
            };
            *p -= s.lr * g;
        }
    }
}
