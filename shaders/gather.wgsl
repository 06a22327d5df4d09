// Gathers a batch from a data set resident on the device: row r of the batch is row
// order[start + r] of the data. A training step starts with this for the inputs and the
// targets, so nothing of the batch crosses from the host. CPU twin: the row copy in
// `Run::update` (src/run/mod.rs) and `CpuStep` (src/train/cpu.rs).

struct GatherParams {
    // First entry of `order` this batch takes.
    start: u32,
    rows: u32,
    // Values per row.
    cols: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> params: GatherParams;

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if i >= params.rows * params.cols {
        return;
    }
    let r = i / params.cols;
    let c = i - r * params.cols;
    dst[i] = src[order[params.start + r] * params.cols + c];
}
