// Bias gradient: db[col] = Σ_row dy[row, col] (dy is [rows, cols], row-major).
//
// One thread per column walks down the rows: neighbouring threads read neighbouring words, and
// the sum's order is fixed, so the result is deterministic run to run.
// The bias *add* is fused into the matmul epilogue (shaders/matmul.wgsl).
// CPU twin: src/cpu/bias.rs. Tests: tests/kernels.rs.

struct BiasParams {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> db: array<f32>;
@group(0) @binding(2) var<uniform> params: BiasParams;

@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if col >= params.cols {
        return;
    }
    var sum = 0.0;
    for (var row = 0u; row < params.rows; row++) {
        sum += dy[row * params.cols + col];
    }
    db[col] = sum;
}
