// Activations, forward and backward, elementwise over a [rows, cols] row-major tensor
// (softmax works along each row).
//
// Forward:  y = f(x).
// Backward: dx = dy · f'(x), written with whichever of x or y gives PyTorch's formula
//           (relu, leaky_relu and gelu use x; sigmoid, tanh and softmax use y).
// Elementwise kernels run on a 2-D grid of 256-thread workgroups, so tensors longer than
// 65535·256 elements still fit the per-dimension dispatch limit.
// The scalar functions are shaders/act_fn.wgsl's, which the host puts in front of this file.
// prelude: act_fn.wgsl
// CPU twin: src/cpu/activation.rs. Tests: tests/kernels.rs.

struct ActParams {
    len: u32,
    cols: u32,
    // leaky_relu's negative_slope; unused by the others.
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: ActParams;

@group(1) @binding(0) var<storage, read> bx: array<f32>;
@group(1) @binding(1) var<storage, read> by: array<f32>;
@group(1) @binding(2) var<storage, read> bdy: array<f32>;
@group(1) @binding(3) var<storage, read_write> bdx: array<f32>;
@group(1) @binding(4) var<uniform> bparams: ActParams;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// ---- forward ----

@compute @workgroup_size(256)
fn identity_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len { y[i] = x[i]; }
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len { y[i] = max(x[i], 0.0); }
}

@compute @workgroup_size(256)
fn leaky_relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len {
        y[i] = leaky_relu(x[i], params.alpha);
    }
}

@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len { y[i] = sigmoid(x[i]); }
}

@compute @workgroup_size(256)
fn tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len { y[i] = tanh_safe(x[i]); }
}

@compute @workgroup_size(256)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len {
        y[i] = gelu(x[i]);
    }
}

@compute @workgroup_size(256)
fn gelu_tanh_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < params.len {
        y[i] = gelu_tanh(x[i]);
    }
}

// One thread per row, max-subtracted for stability (as PyTorch).
@compute @workgroup_size(256)
fn softmax_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg);
    let rows = params.len / params.cols;
    if row >= rows { return; }
    let base = row * params.cols;
    var m = x[base];
    for (var j = 1u; j < params.cols; j++) { m = max(m, x[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < params.cols; j++) {
        let e = exp(x[base + j] - m);
        y[base + j] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < params.cols; j++) { y[base + j] *= inv; }
}

// ---- backward ----

@compute @workgroup_size(256)
fn identity_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = bdy[i]; }
}

@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_RELU, bdy[i], bx[i], 0.0); }
}

@compute @workgroup_size(256)
fn leaky_relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_LEAKY_RELU, bdy[i], bx[i], bparams.alpha); }
}

@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_SIGMOID, bdy[i], by[i], 0.0); }
}

@compute @workgroup_size(256)
fn tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_TANH, bdy[i], by[i], 0.0); }
}

@compute @workgroup_size(256)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_GELU, bdy[i], bx[i], 0.0); }
}

@compute @workgroup_size(256)
fn gelu_tanh_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i < bparams.len { bdx[i] = act_grad(ACT_GELU_TANH, bdy[i], bx[i], 0.0); }
}

// dx_j = y_j · (dy_j − Σ_k dy_k·y_k), one thread per row.
@compute @workgroup_size(256)
fn softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg);
    let rows = bparams.len / bparams.cols;
    if row >= rows { return; }
    let base = row * bparams.cols;
    var dot = 0.0;
    for (var j = 0u; j < bparams.cols; j++) { dot += bdy[base + j] * by[base + j]; }
    for (var j = 0u; j < bparams.cols; j++) { bdx[base + j] = by[base + j] * (bdy[base + j] - dot); }
}
