// torch.optim.Adagrad, PyTorch's single-tensor rule (`_single_tensor_adagrad`), dense
// gradients, in its order of float32 operations:
//   g ← −g if maximize;  g ← g + weight_decay·p  when weight_decay ≠ 0
//   clr ← lr / (1 + (step − 1)·lr_decay)        (host, float64)
//   sum ← sum + g·g
//   p ← p + (−clr·g) / (√sum + eps)
// Needs shaders/update.wgsl in front. CPU twin: src/optim/adagrad.rs.

struct AdagradParams {
    h: UpdateHeader,
    neg_clr: f32,
    eps: f32,
    weight_decay: f32,
    maximize: u32,
    _pad0: vec4<u32>,
    _pad1: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> sum: array<f32>;
@group(0) @binding(5) var<uniform> params: AdagradParams;

@compute @workgroup_size(256)
fn adagrad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    let p = param[i];
    let g = l2_grad(params.h, i, p, grad[i], params.weight_decay, params.maximize != 0u);
    let s = sum[i] + g * g;
    sum[i] = s;
    param[i] = p + params.neg_clr * g / (sqrt(s) + params.eps);
}
