// Split-k's second pass: C = Σ_z partial[z] in z order (+ bias[col]), then the epilogue of
// shaders/matmul.wgsl (which explains the split and the epilogues), one thread per output.
// prelude: act_fn.wgsl
// CPU twin: none of its own; tests/kernels.rs holds every split to the CPU's product and to the
// same sums taken on the host.

override EPI: u32 = 0u;
override ACT: u32 = 0u;

// shaders/matmul.wgsl's block, filled the same way.
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    use_bias: u32,
    alpha: f32,
    k_chunk: u32,
    splits: u32,
    _pad: u32,
}

// [splits, M, N]
@group(0) @binding(0) var<storage, read> partial: array<f32>;
// bias[N]; with EPI = 2 instead V[M,N], laid out as C.
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
// act(C) when EPI = 1 (a placeholder otherwise).
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: MatmulParams;

@compute @workgroup_size(256)
fn matmul_split_sum(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let at = gid.y * nwg.x * 256u + gid.x;
    let len = params.m * params.n;
    if at >= len {
        return;
    }
    var out = partial[at];
    for (var z = 1u; z < params.splits; z++) {
        out += partial[z * len + at];
    }
    if params.use_bias != 0u {
        out += bias[at % params.n];
    }
    if EPI == 2u {
        out = act_grad(ACT, out, bias[at], params.alpha);
    }
    c[at] = out;
    if EPI == 1u {
        y[at] = activate(ACT, out, params.alpha);
    }
}
