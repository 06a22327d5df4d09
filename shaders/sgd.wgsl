// Fused SGD update, torch.optim.SGD's rule (PyTorch 2.x, single-tensor path):
//   g ← −g if maximize
//   g ← g + weight_decay·p                  if weight_decay ≠ 0
//   if momentum ≠ 0:
//       buf ← g                              on the first step (no dampening)
//       buf ← momentum·buf + (1−dampening)·g afterwards
//       g   ← g + momentum·buf if nesterov else buf
//   p ← p − lr·g
// With `skip_slot` set, an update whose loss (slot `skip_slot` of the loss history) is NaN or
// infinite changes nothing: `--on-nan skip` without a read-back.
// Each element of p, g and buf is read once and p and buf written once. Everything, the
// learning rate included, comes from a uniform the host writes each step: changing the rate
// never rebuilds a pipeline.
// CPU twin: src/cpu/sgd.rs. Tests: tests/kernels.rs, tests/sgd.rs.

struct SgdParams {
    len: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    maximize: u32,
    // Non-zero on the first step with momentum: the buffer starts as a copy of the gradient.
    first_step: u32,
    // Loss-history slot whose value must be finite for the update to happen; NO_SKIP: none.
    skip_slot: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const NO_SKIP: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> momentum_buf: array<f32>;
@group(0) @binding(3) var<storage, read> loss_history: array<f32>;
@group(0) @binding(4) var<uniform> params: SgdParams;

fn is_finite(v: f32) -> bool {
    // Exponent all ones: infinity or NaN. (Compilers may fold v != v away.)
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= params.len { return; }
    if params.skip_slot != NO_SKIP && !is_finite(loss_history[params.skip_slot]) { return; }
    let p = param[i];
    var g = grad[i];
    if params.maximize != 0u {
        g = -g;
    }
    if params.weight_decay != 0.0 {
        g = g + params.weight_decay * p;
    }
    if params.momentum != 0.0 {
        var buf: f32;
        if params.first_step != 0u {
            buf = g;
        } else {
            buf = params.momentum * momentum_buf[i] + (1.0 - params.dampening) * g;
        }
        momentum_buf[i] = buf;
        if params.nesterov != 0u {
            g = g + params.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] = p - params.lr * g;
}
