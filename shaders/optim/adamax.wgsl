// torch.optim.Adamax, PyTorch's single-tensor rule (`_single_tensor_adamax`), in its order of
// float32 operations:
//   g ← −g if maximize;  g ← g + weight_decay·p  when weight_decay ≠ 0
//   exp_avg ← lerp(exp_avg, g, 1 − β1)
//   exp_inf ← max(exp_inf·β2, |g| + eps)
//   clr ← lr / (1 − β1^step)                     (host, float64)
//   p ← p + (−clr·exp_avg) / exp_inf
// Needs shaders/update.wgsl in front. CPU twin: src/optim/adamax.rs.

struct AdamaxParams {
    h: UpdateHeader,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    eps: f32,
    neg_clr: f32,
    maximize: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_inf: array<f32>;
@group(0) @binding(6) var<uniform> params: AdamaxParams;

@compute @workgroup_size(256)
fn adamax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    // Every load before the first arithmetic on a loaded value (see sgd.wgsl).
    let p = param[i];
    let g_in = grad[i];
    let m_in = exp_avg[i];
    let u_in = exp_inf[i];
    let g = l2_grad(params.h, i, p, g_in, params.weight_decay, params.maximize != 0u);
    let m = lerp_pt(m_in, g, params.one_minus_beta1);
    let u = maximum_pt(u_in * params.beta2, abs(g) + params.eps);
    exp_avg[i] = m;
    exp_inf[i] = u;
    param[i] = p + params.neg_clr * m / u;
}
