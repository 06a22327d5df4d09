// torch.optim.ASGD, PyTorch's single-tensor rule (`_single_tensor_asgd`), in its order of
// float32 operations:
//   g ← −g if maximize;  g ← g + weight_decay·p  when weight_decay ≠ 0
//   p ← p·(1 − λ·η);  p ← p + (−η)·g          (η, μ: host scalars, float32 as PyTorch keeps them)
//   ax ← p if μ = 1, else ax + (p − ax)·μ
// Needs shaders/update.wgsl in front. CPU twin: src/optim/asgd.rs.

struct AsgdParams {
    h: UpdateHeader,
    decay: f32,
    neg_eta: f32,
    mu: f32,
    weight_decay: f32,
    maximize: u32,
    copy_average: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> ax: array<f32>;
@group(0) @binding(5) var<uniform> params: AsgdParams;

@compute @workgroup_size(256)
fn asgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    // Every load before the first arithmetic on a loaded value (see sgd.wgsl).
    let p_in = param[i];
    let g_in = grad[i];
    let ax_in = ax[i];
    let g = l2_grad(params.h, i, p_in, g_in, params.weight_decay, params.maximize != 0u);
    let p = p_in * params.decay + params.neg_eta * g;
    param[i] = p;
    if params.copy_average != 0u {
        ax[i] = p;
    } else {
        ax[i] = ax_in + (p - ax_in) * params.mu;
    }
}
