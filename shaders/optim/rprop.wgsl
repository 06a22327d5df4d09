// torch.optim.Rprop, PyTorch's single-tensor rule (`_single_tensor_rprop`), in its order of
// float32 operations:
//   g ← −g if maximize
//   step_size ← lr where it is unset (negative: before the first update that happens, as
//               PyTorch initialises its state; the rate is not read again)
//   s ← sign(g·prev)
//   step_size ← clamp(step_size · (etaplus if s > 0, etaminus if s < 0, else 1), min, max)
//   g ← 0 where s < 0
//   p ← p − sign(g)·step_size;  prev ← g
// Needs shaders/update.wgsl in front. CPU twin: src/optim/rprop.rs.

struct RpropParams {
    h: UpdateHeader,
    lr: f32,
    etaminus: f32,
    etaplus: f32,
    step_size_min: f32,
    step_size_max: f32,
    maximize: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> prev: array<f32>;
@group(0) @binding(5) var<storage, read_write> step_size: array<f32>;
@group(0) @binding(6) var<uniform> params: RpropParams;

@compute @workgroup_size(256)
fn rprop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    // Every load before the first arithmetic on a loaded value (see sgd.wgsl).
    let p = param[i];
    let g_in = grad[i];
    let prev_in = prev[i];
    var size_in = step_size[i];
    if size_in < 0.0 {
        size_in = params.lr;
    }
    var g = g_in;
    if params.maximize != 0u {
        g = -g;
    }
    let product = g * prev_in;
    var factor = 1.0;
    if product > 0.0 {
        factor = params.etaplus;
    } else if product < 0.0 {
        factor = params.etaminus;
    }
    let size_out = min(max(size_in * factor, params.step_size_min), params.step_size_max);
    step_size[i] = size_out;
    if product < 0.0 {
        g = 0.0;
    }
    // torch.sign, 0 for NaN (WGSL's sign leaves NaN to the backend).
    let sign_g = select(0.0, 1.0, g > 0.0) - select(0.0, 1.0, g < 0.0);
    param[i] = p - sign_g * size_out;
    prev[i] = g;
}
