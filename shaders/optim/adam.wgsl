// torch.optim.Adam and AdamW, PyTorch's single-tensor rule (`_single_tensor_adam`), in its
// order of float32 operations; the host computes the scalars in float64 as PyTorch's Python
// code does (bias corrections, step size) and hands them over as float32:
//   g ← −g if maximize
//   p ← p·(1 − lr·weight_decay)              decoupled (AdamW), or
//   g ← g + weight_decay·p                   otherwise, when weight_decay ≠ 0
//   exp_avg    ← lerp(exp_avg, g, 1 − β1)
//   exp_avg_sq ← exp_avg_sq·β2 + (1 − β2)·g·g
//   max_exp_avg_sq ← max(max_exp_avg_sq, exp_avg_sq)   amsgrad (then used below)
//   denom ← √exp_avg_sq / √(1 − β2^t) + eps
//   p ← p + (−lr/(1 − β1^t))·exp_avg / denom
// Needs shaders/update.wgsl and shaders/optim/moments.wgsl in front. CPU twin: src/optim/adam.rs.

struct AdamParams {
    h: UpdateHeader,
    decay_factor: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    maximize: u32,
    amsgrad: u32,
    decoupled: u32,
    _pad: u32,
}

@group(0) @binding(6) var<storage, read_write> max_exp_avg_sq: array<f32>;
@group(0) @binding(7) var<uniform> params: AdamParams;

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    var v_max_in = 0.0;
    if params.amsgrad != 0u {
        v_max_in = max_exp_avg_sq[i];
    }
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
    var v_used = o.v;
    if params.amsgrad != 0u {
        v_used = maximum_pt(v_max_in, o.v);
        max_exp_avg_sq[i] = v_used;
    }
    let denom = sqrt(v_used) / params.bias_correction2_sqrt + params.eps;
    param[i] = o.p + params.neg_step_size * o.m / denom;
}
