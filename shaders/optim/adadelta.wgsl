// torch.optim.Adadelta, PyTorch's single-tensor rule (`_single_tensor_adadelta`), in its order
// of float32 operations:
//   g ← −g if maximize;  g ← g + weight_decay·p  when weight_decay ≠ 0
//   square_avg ← square_avg·ρ + (1 − ρ)·g·g
//   delta ← √(acc_delta + eps) / √(square_avg + eps) · g
//   acc_delta ← acc_delta·ρ + (1 − ρ)·delta·delta
//   p ← p + (−lr)·delta
// Needs shaders/update.wgsl in front. CPU twin: src/optim/adadelta.rs.

struct AdadeltaParams {
    h: UpdateHeader,
    neg_lr: f32,
    rho: f32,
    one_minus_rho: f32,
    eps: f32,
    weight_decay: f32,
    maximize: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> square_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> acc_delta: array<f32>;
@group(0) @binding(6) var<uniform> params: AdadeltaParams;

@compute @workgroup_size(256)
fn adadelta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    // Every load before the first arithmetic on a loaded value (see sgd.wgsl).
    let p = param[i];
    let g_in = grad[i];
    let sq_in = square_avg[i];
    let acc_in = acc_delta[i];
    let g = l2_grad(params.h, i, p, g_in, params.weight_decay, params.maximize != 0u);
    let sq = sq_in * params.rho + params.one_minus_rho * g * g;
    let delta = sqrt(acc_in + params.eps) / sqrt(sq + params.eps) * g;
    square_avg[i] = sq;
    acc_delta[i] = acc_in * params.rho + params.one_minus_rho * delta * delta;
    param[i] = p + params.neg_lr * delta;
}
