//! CPU twin of `shaders/norm.wgsl`: the global squared norm and gradient clipping.

/// Σ xᵢ², accumulated in f64 (the reference the GPU's f32 tree is held to).
pub fn sum_squares(x: &[f32]) -> f32 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() as f32
}

/// torch.nn.utils.clip_grad_norm_ (norm_type 2): scales `grad` by
/// min(max_norm / (‖grad‖ + 1e-6), 1) given ‖grad‖² = `norm_sq`.
pub fn clip(grad: &mut [f32], norm_sq: f32, max_norm: f32) {
    let coef = (max_norm / (norm_sq.sqrt() + 1e-6)).min(1.0);
    grad.iter_mut().for_each(|g| *g *= coef);
}
