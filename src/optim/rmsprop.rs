//! torch.optim.RMSprop: config, host scalars and the CPU twin of `shaders/optim/rmsprop.wgsl`,
//! in the kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule,
    check_non_negative, l2_grad, lerp, next_step,
};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::Kernel;

/// torch.optim.RMSprop's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsProp {
    /// Smoothing constant of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the raw second moment.
    pub centered: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// `RmsPropParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct RmsPropScalars {
    neg_lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    maximize: u32,
    centered: u32,
    /// PyTorch's `momentum > 0`, decided on the f64 value (see `SgdScalars`).
    use_momentum: u32,
    _pad: [u32; 3],
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `square_avg`,
/// `momentum_buffer`, `grad_avg`.
pub static KERNEL: Kernel = super::update_kernel!("rmsprop.wgsl", "rmsprop", 3);

pub(super) const REGISTRATION: Registration = Registration {
    name: "rmsprop",
    default_lr: 1e-2,
    from_table: super::read_rule::<RmsProp>,
};

impl UpdateRule for RmsProp {
    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("eps", self.eps)?;
        check_non_negative("momentum", self.momentum)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("alpha", self.alpha)?;
        // PyTorch takes any alpha >= 0, but past 1 the running average of g² goes negative
        // (square_avg = alpha·v + (1 − alpha)·g²) and its square root NaN.
        if self.alpha > 1.0 {
            return Err(KilnError::invalid(
                "optimizer.alpha",
                format!(
                    "must be in [0, 1] (the decay of the running average of g²), got {}",
                    self.alpha
                ),
            ));
        }
        Ok(())
    }

    fn state(&self) -> Vec<StateBlock> {
        let block = |name: &'static str, used| StateBlock {
            name,
            init: 0.0,
            used,
            non_negative: name == "square_avg",
            cycled: name == "momentum_buffer",
        };
        vec![
            block("square_avg", true),
            block("momentum_buffer", self.momentum > 0.0),
            block("grad_avg", self.centered),
        ]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        next_step(scalars)?;
        let momentum = hyper.momentum.unwrap_or(self.momentum);
        Ok(bytemuck::cast(RmsPropScalars {
            neg_lr: (-hyper.lr) as f32,
            alpha: self.alpha as f32,
            one_minus_alpha: (1.0 - self.alpha) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            momentum: momentum as f32,
            maximize: self.maximize as u32,
            centered: self.centered as u32,
            use_momentum: (momentum > 0.0) as u32,
            _pad: [0; 3],
        }))
    }

    fn cycled_momentum(&self) -> Option<CycledMomentum> {
        Some(CycledMomentum::Momentum)
    }

    /// PyTorch's RMSprop makes its momentum buffer at the first update only if that update's
    /// momentum is above 0, and fails at the next update that has one.
    fn refuse_first_momentum(&self, momentum: f64) -> Option<String> {
        (momentum == 0.0)
            .then(|| "the cycle must not start at momentum 0 (max_momentum), as in PyTorch".into())
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
        let s: RmsPropScalars = bytemuck::cast(*scalars);
        let weight_decay = if decay { s.weight_decay } else { 0.0 };
        let [square_avg, momentum_buffer, grad_avg] = state else {
            unreachable!("RMSprop has three state blocks")
        };
        // Zipped slices, no indexing, so the compiler can vectorise; unused state blocks are
        // empty, so each combination has its own loop.
        let square = |p: f32, g: f32, sq: &mut f32| {
            let g = l2_grad(p, g, weight_decay, s.maximize != 0);
            *sq = *sq * s.alpha + s.one_minus_alpha * g * g;
            g
        };
        let centered = |sq: f32, g: f32, ga: &mut f32| {
            *ga = lerp(*ga, g, s.one_minus_alpha);
            (sq + -*ga * *ga).sqrt() + s.eps
        };
        let apply = |p: &mut f32, g: f32, avg: f32, buf: Option<&mut f32>| match buf {
            Some(buf) => {
                *buf = *buf * s.momentum + g / avg;
                *p += s.neg_lr * *buf;
            }
            None => *p += s.neg_lr * g / avg,
        };
        let pgs = param.iter_mut().zip(grad).zip(square_avg.iter_mut());
        match (s.centered != 0, s.use_momentum != 0) {
            (false, false) => {
                for ((p, &g), sq) in pgs {
                    let g = square(*p, g, sq);
                    apply(p, g, sq.sqrt() + s.eps, None);
                }
            }
            (false, true) => {
                for (((p, &g), sq), buf) in pgs.zip(momentum_buffer.iter_mut()) {
                    let g = square(*p, g, sq);
                    apply(p, g, sq.sqrt() + s.eps, Some(buf));
                }
            }
            (true, false) => {
                for (((p, &g), sq), ga) in pgs.zip(grad_avg.iter_mut()) {
                    let g = square(*p, g, sq);
                    let avg = centered(*sq, g, ga);
                    apply(p, g, avg, None);
                }
            }
            (true, true) => {
                let rest = momentum_buffer.iter_mut().zip(grad_avg.iter_mut());
                for (((p, &g), sq), (buf, ga)) in pgs.zip(rest) {
                    let g = square(*p, g, sq);
                    let avg = centered(*sq, g, ga);
                    apply(p, g, avg, Some(buf));
                }
            }
        }
    }
}
