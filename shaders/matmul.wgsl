// Tiled matrix multiply, row-major f32: C[M,N] = op(A)·op(B) (+ bias[N]).
//
// The three products of a dense layer use this one body; the pipeline's override constants pick
// the layout, so the branches below are resolved at pipeline creation, not per element:
//   forward   Y  = X·Wᵀ + b   TRANS_A = false, TRANS_B = true
//   backward  dX = dY·W       TRANS_A = false, TRANS_B = false
//   backward  dW = dYᵀ·X      TRANS_A = true,  TRANS_B = false
// A is stored [M,K] (or [K,M] when TRANS_A), B is stored [K,N] (or [N,K] when TRANS_B).
//
// Each 16×16 workgroup computes a 64×64 tile of C; each thread holds a 4×4 block of outputs in
// registers. Thread (tx, ty) owns rows ty + 16·i and columns tx + 16·j, so neighbouring threads
// read neighbouring workgroup-memory words and write neighbouring words of C.
// CPU twin: src/cpu/matmul.rs. Tests: tests/kernels.rs.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 256u;
// Elements of one A (or B) tile each thread loads per k-step: 64·16 / 256.
const LOADS_PER_THREAD: u32 = 4u;

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    // Non-zero: add bias[col] to every output (the forward pass's fused epilogue).
    use_bias: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> params: MatmulParams;

// k-major: a_tile[kk·TILE_M + row], b_tile[kk·TILE_N + col], so the inner product loop reads
// one row of each per k.
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

fn load_a(row: u32, kk: u32) -> f32 {
    if row >= params.m || kk >= params.k {
        return 0.0;
    }
    if TRANS_A {
        return a[kk * params.m + row];
    }
    return a[row * params.k + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if kk >= params.k || col >= params.n {
        return 0.0;
    }
    if TRANS_B {
        return b[col * params.k + kk];
    }
    return b[kk * params.n + col];
}

@compute @workgroup_size(16, 16)
fn matmul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;

    var acc: array<array<f32, 4>, 4>;
    var a_reg: array<f32, 4>;
    var b_reg: array<f32, 4>;

    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        // Map each thread's loads so that consecutive threads read consecutive addresses of
        // the stored matrix, whichever way it is laid out.
        for (var l = 0u; l < LOADS_PER_THREAD; l++) {
            let e = tid + l * THREADS;
            var ar: u32;
            var ak: u32;
            if TRANS_A {
                ak = e / TILE_M;
                ar = e % TILE_M;
            } else {
                ar = e / TILE_K;
                ak = e % TILE_K;
            }
            a_tile[ak * TILE_M + ar] = load_a(row0 + ar, k0 + ak);

            var bk: u32;
            var bc: u32;
            if TRANS_B {
                bc = e / TILE_K;
                bk = e % TILE_K;
            } else {
                bk = e / TILE_N;
                bc = e % TILE_N;
            }
            b_tile[bk * TILE_N + bc] = load_b(k0 + bk, col0 + bc);
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            for (var i = 0u; i < 4u; i++) {
                a_reg[i] = a_tile[kk * TILE_M + lid.y + 16u * i];
            }
            for (var j = 0u; j < 4u; j++) {
                b_reg[j] = b_tile[kk * TILE_N + lid.x + 16u * j];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 16u * i;
        if row >= params.m {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if col >= params.n {
                continue;
            }
            var v = acc[i][j];
            if params.use_bias != 0u {
                v += bias[col];
            }
            c[row * params.n + col] = v;
        }
    }
}
