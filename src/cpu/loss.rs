//! CPU twin of `shaders/loss.wgsl`: mean-reduced losses and their gradient w.r.t. the output.

use crate::ops::{Loss, Targets};

/// Returns the mean loss and writes dL/d(output) into `grad`. `targets` must match the loss
/// (values for mse/bce, labels for cross_entropy), as `ops::check_loss` ensures.
pub fn loss(loss: Loss, output: &[f32], targets: Targets, cols: usize, grad: &mut [f32]) -> f32 {
    let n = output.len();
    let rows = n / cols;
    // The sum is kept in f64: this is the reference the GPU's f32 tree reduction is held to.
    let mut total = 0.0f64;
    match (loss, targets) {
        (Loss::CrossEntropy, Targets::Classes(labels)) => {
            let scale = 1.0 / rows as f32;
            for ((xr, gr), &label) in output
                .chunks_exact(cols)
                .zip(grad.chunks_exact_mut(cols))
                .zip(labels)
            {
                let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = xr.iter().map(|v| (v - m).exp()).sum();
                total += (m + s.ln() - xr[label as usize]) as f64;
                let inv = 1.0 / s;
                for (j, (g, v)) in gr.iter_mut().zip(xr).enumerate() {
                    let onehot = if j == label as usize { 1.0 } else { 0.0 };
                    *g = ((v - m).exp() * inv - onehot) * scale;
                }
            }
            (total / rows as f64) as f32
        }
        (_, Targets::Values(t)) => {
            let scale = 1.0 / n as f32;
            for ((g, &o), &t) in grad.iter_mut().zip(output).zip(t) {
                let (term, d) = match loss {
                    Loss::Mse => {
                        let d = o - t;
                        (d * d, 2.0 * d)
                    }
                    // ATen's binary_cross_entropy and its backward.
                    Loss::Bce => {
                        let log_p = o.ln().max(-100.0);
                        let log_1mp = (-o).ln_1p().max(-100.0);
                        (
                            -(t * log_p + (1.0 - t) * log_1mp),
                            (o - t) / ((1.0 - o) * o).max(1e-12),
                        )
                    }
                    Loss::BceWithLogits => {
                        let term = o.max(0.0) - o * t + (-o.abs()).exp().ln_1p();
                        (term, 1.0 / (1.0 + (-o).exp()) - t)
                    }
                    Loss::CrossEntropy => unreachable!("checked by ops::check_loss"),
                };
                total += term as f64;
                *g = d * scale;
            }
            (total / n as f64) as f32
        }
        (_, Targets::Classes(_)) => unreachable!("checked by ops::check_loss"),
    }
}
