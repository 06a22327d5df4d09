// Plain buffer copy, dst[i] = src[i]: the device's achievable memory bandwidth, the yardstick
// `kiln bench` holds the SGD update to (it moves 5 words per parameter, the copy 2).
// `copy4` moves a vec4 per thread (16-byte loads and stores, as memory systems like them) when
// the length is a multiple of 4; `copy` moves one float per thread otherwise.
// CPU twin: a slice copy (src/bench.rs). Test: tests/kernels.rs. Benchmark: `kiln bench --ops copy`.

struct CopyParams {
    // Elements: floats for `copy`, vec4s for `copy4`.
    len: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> params: CopyParams;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i < params.len {
        dst[i] = src[i];
    }
}

@group(1) @binding(0) var<storage, read> src4: array<vec4<f32>>;
@group(1) @binding(1) var<storage, read_write> dst4: array<vec4<f32>>;
@group(1) @binding(2) var<uniform> params4: CopyParams;

@compute @workgroup_size(256)
fn copy4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i < params4.len {
        dst4[i] = src4[i];
    }
}
