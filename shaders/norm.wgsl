// Global squared L2 norm of a gradient arena, and clipping to a maximum norm with
// torch.nn.utils.clip_grad_norm_'s rule: g ← g·min(max_norm / (‖g‖ + 1e-6), 1).
//
// Pass 1 (sum_squares_partial): a fixed number of workgroups, each summing a strided share
// of the elements into partials[workgroup]. Pass 2 (sum_squares_final): one workgroup sums the
// partials in a tree and writes ‖g‖² into slot `slot` of a GPU-resident history. The grid
// depends only on the length, so the result is the same run to run.
// Pass 3 (clip): scales every element by the clip coefficient computed from that slot.
// CPU twin: src/cpu/norm.rs. Tests: tests/kernels.rs, tests/training.rs.

struct PartialParams {
    len: u32,
    groups: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> partial_params: PartialParams;

var<workgroup> scratch: array<f32, 256>;

fn tree_sum(lid: u32) {
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn sum_squares_partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = partial_params.groups * 256u;
    var s = 0.0;
    for (var i = wg.x * 256u + lid; i < partial_params.len; i += stride) {
        let v = x[i];
        s = fma(v, v, s);
    }
    scratch[lid] = s;
    tree_sum(lid);
    if lid == 0u {
        partials[wg.x] = scratch[0];
    }
}

struct FinalParams {
    count: u32,
    slot: u32,
}

@group(1) @binding(0) var<storage, read> final_partials: array<f32>;
@group(1) @binding(1) var<storage, read_write> history: array<f32>;
@group(1) @binding(2) var<uniform> final_params: FinalParams;

@compute @workgroup_size(256)
fn sum_squares_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < final_params.count; i += 256u) {
        s += final_partials[i];
    }
    scratch[lid] = s;
    tree_sum(lid);
    if lid == 0u {
        history[final_params.slot] = scratch[0];
    }
}

struct ClipParams {
    len: u32,
    slot: u32,
    max_norm: f32,
    _pad: u32,
}

@group(2) @binding(0) var<storage, read_write> grad: array<f32>;
@group(2) @binding(1) var<storage, read> norm_sq: array<f32>;
@group(2) @binding(2) var<uniform> clip_params: ClipParams;

@compute @workgroup_size(256)
fn clip(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= clip_params.len { return; }
    let coef = min(clip_params.max_norm / (sqrt(norm_sq[clip_params.slot]) + 1e-6), 1.0);
    grad[i] = grad[i] * coef;
}
