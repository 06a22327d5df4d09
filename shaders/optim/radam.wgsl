// torch.optim.RAdam, PyTorch's single-tensor rule (`_single_tensor_radam`), in its order of
// float32 operations; the host computes the bias corrections, ρ_t and the rectification term in
// float64 as PyTorch's Python code does:
//   g ← −g if maximize
//   p ← p·(1 − lr·weight_decay)  decoupled, or  g ← g + weight_decay·p,  when weight_decay ≠ 0
//   exp_avg    ← lerp(exp_avg, g, 1 − β1)
//   exp_avg_sq ← exp_avg_sq·β2 + (1 − β2)·g·g
//   u ← (exp_avg / (1 − β1^t))·lr
//   ρ_t > 5: u ← u·(1/(√exp_avg_sq + eps))·√(1 − β2^t)·r_t
//   p ← p − u
// Needs shaders/update.wgsl and shaders/optim/moments.wgsl in front. CPU twin: src/optim/radam.rs.

struct RAdamParams {
    h: UpdateHeader,
    decay_factor: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction1: f32,
    lr: f32,
    eps: f32,
    bias_correction2_sqrt: f32,
    rect: f32,
    // Bit 0: maximize, bit 1: decoupled, bit 2: rectified (ρ_t > 5).
    flags: u32,
    _pad: u32,
}

@group(0) @binding(6) var<uniform> params: RAdamParams;

@compute @workgroup_size(256)
fn radam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    let o = adam_moments(
        params.h,
        i,
        params.decay_factor,
        params.weight_decay,
        params.one_minus_beta1,
        params.beta2,
        params.one_minus_beta2,
        (params.flags & 1u) != 0u,
        (params.flags & 2u) != 0u,
    );
    var u = o.m / params.bias_correction1 * params.lr;
    if (params.flags & 4u) != 0u {
        let adaptive = 1.0 / (sqrt(o.v) + params.eps) * params.bias_correction2_sqrt;
        u = u * adaptive * params.rect;
    }
    param[i] = o.p - u;
}
