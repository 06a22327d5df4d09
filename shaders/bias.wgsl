// Bias gradient: db[col] = Σ_row dy[row, col] (dy is [rows, cols], row-major).
//
// One thread walking every row of its column would leave the GPU waiting: a batch of 1024 rows
// over 1024 columns is then 1024 threads on a few cores, each issuing 1024 loads in turn. So the
// rows are cut into parts of ROWS_PER_PART (bias_part_rows() on the host):
//   pass 1, bias_grad_partial: one thread per (column, part) sums its part's rows in row order
//           into sums[part·cols + col];
//   pass 2, bias_grad_final:   one thread per column adds the parts' sums in part order into db.
// Launches recorded for one part need pass 1 alone, writing db; recorded for several, a smaller
// batch of one part still takes both passes (pass 2 then adds one sum to 0, the same value).
// The order is fixed, so the result is the same run to run, and the CPU twin sums in the same
// order, to the bit.
// The bias *add* is fused into the matmul epilogue (shaders/matmul.wgsl).
// CPU twin: src/cpu/bias.rs. Tests: tests/kernels.rs.

const ROWS_PER_PART: u32 = 32u;

struct BiasParams {
    rows: u32,
    cols: u32,
    // Parts of ROWS_PER_PART rows (pass 2's count).
    parts: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
// Pass 1 writes the parts' sums here, or db itself when there is one part.
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;
@group(0) @binding(2) var<uniform> params: BiasParams;

@compute @workgroup_size(64)
fn bias_grad_partial(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let col = gid.x;
    if col >= params.cols {
        return;
    }
    let part = wg.y;
    let first = part * ROWS_PER_PART;
    let end = min(first + ROWS_PER_PART, params.rows);
    var sum = 0.0;
    for (var row = first; row < end; row++) {
        sum += dy[row * params.cols + col];
    }
    sums[part * params.cols + col] = sum;
}

@group(1) @binding(0) var<storage, read> part_sums: array<f32>;
@group(1) @binding(1) var<storage, read_write> db: array<f32>;
@group(1) @binding(2) var<uniform> final_params: BiasParams;

@compute @workgroup_size(64)
fn bias_grad_final(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if col >= final_params.cols {
        return;
    }
    var sum = 0.0;
    for (var part = 0u; part < final_params.parts; part++) {
        sum += part_sums[part * final_params.cols + col];
    }
    db[col] = sum;
}
