//! torch.optim.Adam and AdamW (Adam with decoupled weight decay): config, host scalars and the
//! CPU twin of `shaders/optim/adam.wgsl`, in the kernel's order of operations.

use serde::Deserialize;

use super::{
    CycledMomentum, Hyper, MomentScalars, Optimizer, Registration, SCALAR_WORDS, Scalars,
    StateBlock, UpdateRule, check_betas, check_non_negative, maximum, next_step, parse_args,
};
use crate::error::Result;
use crate::gpu::kernels::Kernel;

/// torch.optim.Adam's arguments (the rate comes from the schedule) with its defaults;
/// [`Adam::adamw`] gives torch.optim.AdamW's.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adam {
    /// Decay rates of the first and second moment estimates (default [0.9, 0.999]).
    pub betas: [f64; 2],
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0; AdamW's 1e-2).
    pub weight_decay: f64,
    /// Keep the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
    /// Decay the weights directly (AdamW) instead of adding an L2 term to the gradient.
    pub decoupled_weight_decay: bool,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
        }
    }
}

impl Adam {
    /// torch.optim.AdamW's defaults: weight decay 1e-2, decoupled.
    pub fn adamw() -> Self {
        Adam {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Adam::default()
        }
    }
}

/// torch.optim.AdamW's arguments: Adam's without `decoupled_weight_decay`, which AdamW fixes.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdamWArgs {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    maximize: bool,
}

impl Default for AdamWArgs {
    fn default() -> Self {
        let a = Adam::adamw();
        AdamWArgs {
            betas: a.betas,
            eps: a.eps,
            weight_decay: a.weight_decay,
            amsgrad: a.amsgrad,
            maximize: a.maximize,
        }
    }
}

/// `AdamParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamScalars {
    moments: MomentScalars,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    maximize: u32,
    amsgrad: u32,
    decoupled: u32,
    _pad: u32,
}

/// The kernel: parameters, gradients, loss history, no-decay ranges, `exp_avg`,
/// `exp_avg_sq`, `max_exp_avg_sq`.
pub static KERNEL: Kernel = super::update_kernel!("adam.wgsl", "adam", 3, moments);

pub(super) const REGISTRATION: Registration = Registration {
    name: "adam",
    default_lr: 1e-3,
    from_table: super::read_rule::<Adam>,
};

pub(super) const ADAMW_REGISTRATION: Registration = Registration {
    name: "adamw",
    default_lr: 1e-3,
    from_table: adamw_from_table,
};

fn adamw_from_table(kind: &'static str, table: toml::Table) -> Result<Optimizer> {
    let a: AdamWArgs = parse_args(kind, table)?;
    Optimizer::new(Adam {
        betas: a.betas,
        eps: a.eps,
        weight_decay: a.weight_decay,
        amsgrad: a.amsgrad,
        maximize: a.maximize,
        decoupled_weight_decay: true,
    })
}

impl UpdateRule for Adam {
    /// "adamw" with decoupled weight decay: the same update, whichever name made it.
    fn name(&self) -> &'static str {
        if self.decoupled_weight_decay {
            "adamw"
        } else {
            "adam"
        }
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("eps", self.eps)?;
        check_betas(self.betas)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn state(&self) -> Vec<StateBlock> {
        let block = |name: &'static str, used| StateBlock {
            name,
            init: 0.0,
            used,
            non_negative: name != "exp_avg",
            cycled: false,
        };
        vec![
            block("exp_avg", true),
            block("exp_avg_sq", true),
            block("max_exp_avg_sq", self.amsgrad),
        ]
    }

    /// PyTorch's host arithmetic in f64: `bias_correction1 = 1 − β1^step`,
    /// `step_size = lr / bias_correction1`, `bias_correction2_sqrt = (1 − β2^step)^0.5`,
    /// AdamW's factor `1 − lr·weight_decay`.
    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        let step = next_step(scalars)?;
        let lr = hyper.lr;
        // β1 as the schedule cycles it: PyTorch reads group['betas'] afresh every update,
        // the bias correction included.
        let [beta1, beta2] = [hyper.momentum.unwrap_or(self.betas[0]), self.betas[1]];
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = lr / bias_correction1;
        Ok(bytemuck::cast(AdamScalars {
            moments: MomentScalars::new(lr, self.weight_decay, [beta1, beta2]),
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps as f32,
            neg_step_size: (-step_size) as f32,
            maximize: self.maximize as u32,
            amsgrad: self.amsgrad as u32,
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
        let s: AdamScalars = bytemuck::cast(*scalars);
        let [exp_avg, exp_avg_sq, max_exp_avg_sq] = state else {
            unreachable!("Adam has three state blocks")
        };
        // Zipped slices, no indexing, so the compiler can vectorise; the flags are the same
        // for every element, so the branches cost nothing per element once unswitched.
        let moments = s.moments.moments(decay, s.maximize != 0, s.decoupled != 0);
        let step = |p: &mut f32, m: f32, v_used: f32| {
            let denom = v_used.sqrt() / s.bias_correction2_sqrt + s.eps;
            *p += s.neg_step_size * m / denom;
        };
        if s.amsgrad != 0 {
            let pgmv = param
                .iter_mut()
                .zip(grad)
                .zip(exp_avg.iter_mut())
                .zip(exp_avg_sq.iter_mut())
                .zip(max_exp_avg_sq.iter_mut());
            for ((((p, &g), m), v), max_v) in pgmv {
                moments.apply(p, g, m, v);
                *max_v = maximum(*max_v, *v);
                step(p, *m, *max_v);
            }
        } else {
            moments.for_each(param, grad, exp_avg, exp_avg_sq, |p, _, m, v| step(p, m, v));
        }
    }
}
