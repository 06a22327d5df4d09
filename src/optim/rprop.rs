//! torch.optim.Rprop (resilient backpropagation): config, host scalars and the CPU twin of
//! `shaders/optim/rprop.wgsl`, in the kernel's order of operations.
//!
//! As in PyTorch, the rate sets each parameter's first step size and is not read again: a
//! schedule changes nothing after the first update.

use serde::Deserialize;

use super::{
    Hyper, Registration, SCALAR_WORDS, Scalars, StateBlock, UpdateRule, next_step, past_f32,
};
use crate::error::{KilnError, Result};
use crate::gpu::kernels::Kernel;

/// torch.optim.Rprop's arguments (the rate comes from the schedule) with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rprop {
    /// The factors a step size shrinks by when the gradient changes sign and grows by when
    /// it keeps it, (etaminus, etaplus) (default [0.5, 1.2]).
    pub etas: [f64; 2],
    /// The smallest and largest step size (default [1e-6, 50]).
    pub step_sizes: [f64; 2],
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for Rprop {
    fn default() -> Self {
        Rprop {
            etas: [0.5, 1.2],
            step_sizes: [1e-6, 50.0],
            maximize: false,
        }
    }
}

/// `RpropParams` of the kernel after the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct RpropScalars {
    lr: f32,
    etaminus: f32,
    etaplus: f32,
    step_size_min: f32,
    step_size_max: f32,
    maximize: u32,
    _pad: [u32; 6],
}

/// A step size not yet set (every set one is ≥ 0: `step_sizes` are).
const UNSET: f32 = -1.0;

/// The kernel: parameters, gradients, loss history, no-decay ranges, `prev`, `step_size`.
pub static KERNEL: Kernel = super::update_kernel!("rprop.wgsl", "rprop", 2);

pub(super) const REGISTRATION: Registration = Registration {
    name: "rprop",
    default_lr: 1e-2,
    from_table: super::read_rule::<Rprop>,
};

impl UpdateRule for Rprop {
    fn name(&self) -> &'static str {
        "rprop"
    }

    fn validate(&self) -> Result<()> {
        // PyTorch's rule, held in the f32 the update computes in (a factor that rounds to 0
        // or to inf there would stop or blow up every step).
        let [minus, plus] = self.etas.map(|e| e as f32);
        if !(0.0 < minus && minus < 1.0 && 1.0 < plus && plus.is_finite()) {
            return Err(KilnError::invalid(
                "optimizer.etas",
                format!(
                    "must be 0 < etas[0] < 1 < etas[1] within f32, got {:?}",
                    self.etas
                ),
            ));
        }
        for (i, &s) in self.step_sizes.iter().enumerate() {
            if !(s.is_finite() && s >= 0.0 && past_f32(s).is_none()) {
                return Err(KilnError::invalid(
                    "optimizer.step_sizes",
                    format!("step_sizes[{i}] must be finite, >= 0 and within f32, got {s:?}"),
                ));
            }
        }
        // PyTorch clamps to the largest then, so that every step is that size; a reversed
        // pair is a mistake.
        if self.step_sizes[0] > self.step_sizes[1] {
            return Err(KilnError::invalid(
                "optimizer.step_sizes",
                format!(
                    "the smallest step size must not exceed the largest, got {:?}",
                    self.step_sizes
                ),
            ));
        }
        Ok(())
    }

    fn state(&self) -> Vec<StateBlock> {
        vec![
            StateBlock {
                name: "prev",
                init: 0.0,
                used: true,
                non_negative: false,
                cycled: false,
            },
            // Negative until the first update that happens sets it to that update's rate
            // (PyTorch's state initialisation): an update skipped for a non-finite loss
            // leaves it unset.
            StateBlock {
                name: "step_size",
                init: UNSET,
                used: true,
                non_negative: false,
                cycled: false,
            },
        ]
    }

    fn scalars(&self, hyper: Hyper, scalars: &mut Scalars) -> Result<[u32; SCALAR_WORDS]> {
        next_step(scalars)?;
        let [etaminus, etaplus] = self.etas;
        let [step_size_min, step_size_max] = self.step_sizes;
        Ok(bytemuck::cast(RpropScalars {
            lr: hyper.lr as f32,
            etaminus: etaminus as f32,
            etaplus: etaplus as f32,
            step_size_min: step_size_min as f32,
            step_size_max: step_size_max as f32,
            maximize: self.maximize as u32,
            _pad: [0; 6],
        }))
    }

    fn weight_decay(&self) -> f64 {
        0.0
    }

    fn kernel(&self) -> &'static Kernel {
        &KERNEL
    }

    fn update_cpu(
        &self,
        scalars: &[u32; SCALAR_WORDS],
        _decay: bool,
        param: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
    ) {
        let s: RpropScalars = bytemuck::cast(*scalars);
        let [prev, step_size] = state else {
            unreachable!("Rprop has two state blocks")
        };
        let pgps = param
            .iter_mut()
            .zip(grad)
            .zip(prev.iter_mut())
            .zip(step_size.iter_mut());
        for (((p, &g), prev), size) in pgps {
            let g = if s.maximize != 0 { -g } else { g };
            let size_in = if *size < 0.0 { s.lr } else { *size };
            // The sign of the f32 product, as PyTorch's `grad.mul(prev).sign()`: a product
            // that underflows to 0 keeps the step size.
            let product = g * *prev;
            let factor = if product > 0.0 {
                s.etaplus
            } else if product < 0.0 {
                s.etaminus
            } else {
                1.0
            };
            let size_out = (size_in * factor).max(s.step_size_min).min(s.step_size_max);
            *size = size_out;
            // A gradient that changed sign takes no step and is forgotten.
            let g = if product < 0.0 { 0.0 } else { g };
            *p -= sign(g) * size_out;
            *prev = g;
        }
    }
}

/// torch.sign: −1, 0 or 1, and 0 for NaN (a NaN gradient moves no parameter, as in PyTorch).
fn sign(v: f32) -> f32 {
    ((v > 0.0) as i32 - (v < 0.0) as i32) as f32
}
