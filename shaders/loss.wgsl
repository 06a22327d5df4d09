// Losses with mean reduction, as PyTorch, and their gradient w.r.t. the network output.
//
// Pass 1 (one entry point per loss) writes each element's (or row's) loss term into `terms` and
// the gradient into `grad`, already scaled by 1/divisor (numel for mse/bce, rows for
// cross_entropy). Pass 2, `loss_reduce`, sums the terms in one workgroup, in a fixed order, and
// writes the mean into slot `slot` of a GPU-resident loss history, so a training loop never has to
// read the loss back per step.
// CPU twin: src/cpu/loss.rs. Tests: tests/kernels.rs.

struct LossParams {
    // Elements of the output tensor.
    len: u32,
    // Columns of the output (classes, for cross_entropy).
    cols: u32,
    // 1 / divisor of the mean reduction.
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> output: array<f32>;
// Targets, same shape as output; for cross_entropy, class indices stored as f32 (exact below
// 2^24, which the host checks).
@group(0) @binding(1) var<storage, read> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> terms: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<uniform> params: LossParams;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

@compute @workgroup_size(256)
fn mse(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= params.len { return; }
    let d = output[i] - targets[i];
    terms[i] = d * d;
    grad[i] = 2.0 * d * params.scale;
}

// Binary cross-entropy on probabilities. Logs are clamped at −100 and the gradient's denominator
// at 1e-12, exactly as ATen's binary_cross_entropy(_backward).
@compute @workgroup_size(256)
fn bce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= params.len { return; }
    let p = output[i];
    let t = targets[i];
    let log_p = max(log(p), -100.0);
    let log_1mp = max(log(1.0 - p), -100.0);
    terms[i] = -(t * log_p + (1.0 - t) * log_1mp);
    grad[i] = (p - t) / max((1.0 - p) * p, 1e-12) * params.scale;
}

// BCE on logits in the stable form max(x,0) − x·t + log(1 + e^−|x|).
@compute @workgroup_size(256)
fn bce_with_logits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if i >= params.len { return; }
    let v = output[i];
    let t = targets[i];
    terms[i] = max(v, 0.0) - v * t + log(1.0 + exp(-abs(v)));
    grad[i] = (1.0 / (1.0 + exp(-v)) - t) * params.scale;
}

// Cross-entropy from logits with class labels, one thread per row:
// loss = logsumexp(x) − x[label], grad = softmax(x) − onehot(label).
@compute @workgroup_size(256)
fn cross_entropy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg);
    let rows = params.len / params.cols;
    if row >= rows { return; }
    let base = row * params.cols;
    let label = u32(targets[row]);
    var m = output[base];
    for (var j = 1u; j < params.cols; j++) { m = max(m, output[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < params.cols; j++) { s += exp(output[base + j] - m); }
    let lse = m + log(s);
    terms[row] = lse - output[base + label];
    let inv = 1.0 / s;
    for (var j = 0u; j < params.cols; j++) {
        let p = exp(output[base + j] - m) * inv;
        grad[base + j] = (p - select(0.0, 1.0, j == label)) * params.scale;
    }
}

// ---- reduction ----

struct ReduceParams {
    count: u32,
    slot: u32,
    scale: f32,
    _pad: u32,
}

@group(1) @binding(0) var<storage, read> values: array<f32>;
@group(1) @binding(1) var<storage, read_write> history: array<f32>;
@group(1) @binding(2) var<uniform> reduce_params: ReduceParams;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn loss_reduce(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < reduce_params.count; i += 256u) {
        s += values[i];
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        history[reduce_params.slot] = partial[0] * reduce_params.scale;
    }
}
