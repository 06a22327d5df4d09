// torch.optim.NAdam, PyTorch's single-tensor rule (`_single_tensor_nadam`), in its order of
// float32 operations; the host computes μ_t, μ_{t+1}, the running product of μ and the two
// step coefficients in float64 as PyTorch's Python code does:
//   g ← −g if maximize
//   p ← p·(1 − lr·weight_decay)  decoupled, or  g ← g + weight_decay·p,  when weight_decay ≠ 0
//   exp_avg    ← lerp(exp_avg, g, 1 − β1)
//   exp_avg_sq ← exp_avg_sq·β2 + (1 − β2)·g·g
//   denom ← √(exp_avg_sq / (1 − β2^t)) + eps
//   p ← p + c_grad·g / denom;  p ← p + c_avg·exp_avg / denom
//     c_grad = −lr·(1 − μ_t)/(1 − Πμ),  c_avg = −lr·μ_{t+1}/(1 − Πμ·μ_{t+1})
// Needs shaders/update.wgsl and shaders/optim/moments.wgsl in front. CPU twin: src/optim/nadam.rs.

struct NAdamParams {
    h: UpdateHeader,
    decay_factor: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2: f32,
    eps: f32,
    grad_coef: f32,
    avg_coef: f32,
    maximize: u32,
    decoupled: u32,
    _pad: u32,
}

@group(0) @binding(6) var<uniform> params: NAdamParams;

@compute @workgroup_size(256)
fn nadam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
        params.maximize != 0u,
        params.decoupled != 0u,
    );
    let denom = sqrt(o.v / params.bias_correction2) + params.eps;
    let p = o.p + params.grad_coef * o.g / denom;
    param[i] = p + params.avg_coef * o.m / denom;
}
