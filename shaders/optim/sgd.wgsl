// torch.optim.SGD, PyTorch's single-tensor rule (`_single_tensor_sgd`):
//   g ← −g if maximize
//   g ← g + weight_decay·p                  if weight_decay ≠ 0
//   if momentum ≠ 0:
//       buf ← g                              on the first step (no dampening)
//       buf ← momentum·buf + (1−dampening)·g afterwards
//       g   ← g + momentum·buf if nesterov else buf
//   p ← p − lr·g
// Each element of p, g and buf is read once and p and buf written once. The rate and every
// other scalar come from the uniform the host writes each step: no pipeline rebuild.
// Needs shaders/update.wgsl in front. CPU twin: src/optim/sgd.rs.

struct SgdParams {
    h: UpdateHeader,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    maximize: u32,
    // Non-zero on the first update: the momentum buffer starts as a copy of the gradient.
    first_step: u32,
    // PyTorch's momentum ≠ 0, decided by the host on the f64 value.
    use_momentum: u32,
    _pad1: vec4<u32>,
}

@group(0) @binding(4) var<storage, read_write> momentum_buffer: array<f32>;
@group(0) @binding(5) var<uniform> params: SgdParams;

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    // Every load is issued before the first arithmetic on a loaded value: the negation for
    // `maximize` waits for g, and a load behind it would cost a second trip to memory.
    let p = param[i];
    let g_in = grad[i];
    var buf_in = 0.0;
    if params.use_momentum != 0u && params.first_step == 0u {
        buf_in = momentum_buffer[i];
    }
    var g = l2_grad(params.h, i, p, g_in, params.weight_decay, params.maximize != 0u);
    if params.use_momentum != 0u {
        var buf: f32;
        if params.first_step != 0u {
            buf = g;
        } else {
            buf = params.momentum * buf_in + (1.0 - params.dampening) * g;
        }
        momentum_buffer[i] = buf;
        if params.nesterov != 0u {
            g = g + params.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] = p - params.lr * g;
}
