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
// Needs shaders/update.wgsl in front. CPU twin: src/optim/adam.rs.

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

@group(0) @binding(4) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(6) var<storage, read_write> max_exp_avg_sq: array<f32>;
@group(0) @binding(7) var<uniform> params: AdamParams;

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    var p = param[i];
    var g = grad[i];
    if params.maximize != 0u {
        g = -g;
    }
    if params.weight_decay != 0.0 && decays(params.h, i) {
        if params.decoupled != 0u {
            p = p * params.decay_factor;
        } else {
            g = g + params.weight_decay * p;
        }
    }
    let m = lerp_pt(exp_avg[i], g, params.one_minus_beta1);
    exp_avg[i] = m;
    let v = exp_avg_sq[i] * params.beta2 + params.one_minus_beta2 * g * g;
    exp_avg_sq[i] = v;
    var v_used = v;
    if params.amsgrad != 0u {
        v_used = max(max_exp_avg_sq[i], v);
        max_exp_avg_sq[i] = v_used;
    }
    let denom = sqrt(v_used) / params.bias_correction2_sqrt + params.eps;
    param[i] = p + params.neg_step_size * m / denom;
}
