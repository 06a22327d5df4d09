// Tiled matrix multiply, row-major f32: C[M,N] = op(A)·op(B) (+ bias[N]).
//
// The three products of a dense layer use this one body; the pipeline's override constants pick
// the layout, so the branches below are resolved at pipeline creation, not per element:
//   forward   Y  = X·Wᵀ + b   TRANS_A = false, TRANS_B = true
//   backward  dX = dY·W       TRANS_A = false, TRANS_B = false
//   backward  dW = dYᵀ·X      TRANS_A = true,  TRANS_B = false
// A is stored [M,K] (or [K,M] when TRANS_A), B is stored [K,N] (or [N,K] when TRANS_B).
//
// Each workgroup computes a BM×BN tile of C, BK values of k at a time; each thread holds a TM×TN
// block of outputs in registers. Both tiles sit k-major in workgroup memory as vec4s, so a thread
// reads the four rows (or columns) it needs for one k in one load. A thread's rows are TM/4 runs
// of four, WG_Y·4 apart, and likewise its columns: neighbouring threads then read neighbouring
// vec4s of workgroup memory and write neighbouring words of C. The tiles of the next step
// through k are fetched into registers before this step's products run, so a workgroup waits
// for memory once per step at most, not once per load.
//
// Every output is one fma chain over k in increasing order, whatever the tile shape, so every
// tile shape gives bit-identical results (the tuner may pick any of them).
//
// Epilogue: + bias[col] (the forward product), and with EPI an activation fused in:
//   EPI = 1: the forward activation after a dense layer. C keeps the pre-activation (the
//            backward pass reads it) and Y gets act(C).
//   EPI = 2: the backward activation before a dense layer, in dX = dY·W: C gets
//            dX·act'(V), V the activation's input or output bound where the bias would be.
// Either way the step needs no separate activation kernel and never reads C back for it. The
// activation functions are shaders/act_fn.wgsl's, which the host puts in front of this file.
//
// Split-k (PARTIAL): a product with few tiles of C and a long k leaves most of a large GPU idle,
// so the host may give each tile several workgroups along z, workgroup z taking k in
// [z·k_chunk, (z+1)·k_chunk). Each writes its plain partial product to c[z·M·N + row·N + col],
// without bias or epilogue, and `matmul_split_sum` (at the end) adds the partials in z order and
// applies them. k_chunk is a multiple of 64, so of every BK: a tile step never straddles two
// runs, and the runs are the same whatever the tile shape, so every tile shape still gives
// bit-identical results for one split. Splitting itself changes rounding (a sum of fma chains
// in place of one chain); the host splits only where the tuner chose it for the product.
// prelude: act_fn.wgsl
// CPU twin: src/cpu/matmul.rs. Tests: tests/kernels.rs. Tile shapes: src/gpu/matmul_tiles.rs.

// The tile shape. The host rewrites these lines for each shape it compiles
// (`TileConfig::defines`); the values here are one valid shape, so the file stands alone.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;
// 1: each run of 32 threads (a warp on NVIDIA) holds a block of 4×8 threads of the
// workgroup's grid instead of 32/WG_X whole rows, so that it reads 4 A and 8 B vec4s of
// workgroup memory per k (with 16-thread rows, 2 and 16). The host sets it only where the grid
// is whole blocks.
const WARP: u32 = 0u;
// 1: the host replaces the loop over kk marked below with its straight-line body, every
// register-block index a constant (`kernels::with_defines`), for a driver that does not unroll
// it itself; the same fmas in the same order.
const UNROLL: u32 = 0u;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Read A (B) through its vec4 view: set by the host only where the stored matrix's contiguous
// dimension is a multiple of 4, so a vec4 never straddles a row and bindings are whole vec4s.
override VEC_A: bool = false;
override VEC_B: bool = false;
// The epilogue (see above; 0: the product and bias alone) and its activation (act_fn.wgsl's
// ids).
override EPI: u32 = 0u;
override ACT: u32 = 0u;
override PARTIAL: bool = false;

const WG_X: u32 = BN / TN;
const WG_Y: u32 = BM / TM;
const THREADS: u32 = WG_X * WG_Y;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const BK4: u32 = BK / 4u;
// Runs of four rows (columns) per thread.
const RM: u32 = TM / 4u;
const RN: u32 = TN / 4u;

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    // Non-zero: add bias[col] to every output (the forward pass's fused epilogue).
    use_bias: u32,
    // leaky_relu's slope, when the epilogue applies it.
    alpha: f32,
    // Split-k: the k values each workgroup along z takes, and the number of splits.
    k_chunk: u32,
    splits: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
// The same buffers as a and b seen as vec4s when VEC_A / VEC_B (a placeholder otherwise).
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
// bias[N]; with EPI = 2 instead V[M,N], laid out as C.
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// C, or with PARTIAL the partial products [splits, M, N].
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
// act(C) when EPI = 1 (a placeholder otherwise), laid out as C.
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<uniform> params: MatmulParams;

// k-major: a_tile[kk·BM4 + r] holds rows 4r..4r+3 of the tile at k = kk; b_tile likewise columns.
var<workgroup> a_tile: array<vec4<f32>, BK * BM4>;
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>;

// A at (row, kk..kk+3): four values along k (A stored [M,K]).
fn a_along_k(row: u32, kk: u32) -> vec4<f32> {
    let m = params.m;
    let k = params.k;
    if VEC_A {
        // k % 4 == 0, so the four are all in range or all out.
        if row >= m || kk >= k {
            return vec4(0.0);
        }
        return a4[(row * k + kk) / 4u];
    }
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if row < m && kk + i < k {
            v[i] = a[row * k + kk + i];
        }
    }
    return v;
}

// A at (row..row+3, kk): four values along m (A stored [K,M]).
fn a_along_m(row: u32, kk: u32) -> vec4<f32> {
    let m = params.m;
    let k = params.k;
    if VEC_A {
        if row >= m || kk >= k {
            return vec4(0.0);
        }
        return a4[(kk * m + row) / 4u];
    }
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if row + i < m && kk < k {
            v[i] = a[kk * m + row + i];
        }
    }
    return v;
}

// B at (kk, col..col+3): four values along n (B stored [K,N]).
fn b_along_n(kk: u32, col: u32) -> vec4<f32> {
    let n = params.n;
    let k = params.k;
    if VEC_B {
        if col >= n || kk >= k {
            return vec4(0.0);
        }
        return b4[(kk * n + col) / 4u];
    }
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if col + i < n && kk < k {
            v[i] = b[kk * n + col + i];
        }
    }
    return v;
}

// B at (kk..kk+3, col): four values along k (B stored [N,K]).
fn b_along_k(kk: u32, col: u32) -> vec4<f32> {
    let n = params.n;
    let k = params.k;
    if VEC_B {
        if col >= n || kk >= k {
            return vec4(0.0);
        }
        return b4[(col * k + kk) / 4u];
    }
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if col < n && kk + i < k {
            v[i] = b[col * k + kk + i];
        }
    }
    return v;
}

// The tiles for k0..k0+BK are BK·BM4 (BK·BN4) vec4 slots; thread tid moves slots tid,
// tid + THREADS, … . Consecutive threads read consecutive vec4s of the stored matrix whichever
// way it is laid out; a vec4 along k is spread over four k rows of the tile, one along m or n
// lands whole. A thread first fetches all its slots into registers and only then writes them
// to workgroup memory: every load is in flight at once, and the next tile's loads overlap the
// products of this one (the main loop fetches before it computes).
const A_SLOTS: u32 = BK * BM4;
const B_SLOTS: u32 = BK * BN4;
const A_LOADS: u32 = (A_SLOTS + THREADS - 1u) / THREADS;
const B_LOADS: u32 = (B_SLOTS + THREADS - 1u) / THREADS;

fn a_fetch(s: u32, row0: u32, k0: u32) -> vec4<f32> {
    if s >= A_SLOTS {
        return vec4(0.0);
    }
    if TRANS_A {
        return a_along_m(row0 + 4u * (s % BM4), k0 + s / BM4);
    }
    return a_along_k(row0 + s / BK4, k0 + 4u * (s % BK4));
}

fn a_stash(s: u32, v: vec4<f32>) {
    if s >= A_SLOTS {
        return;
    }
    if TRANS_A {
        // s = kk·BM4 + r4: the slot's own place in the k-major tile.
        a_tile[s] = v;
        return;
    }
    let row = s / BK4;
    let kq = s % BK4;
    for (var i = 0u; i < 4u; i++) {
        a_tile[(4u * kq + i) * BM4 + row / 4u][row % 4u] = v[i];
    }
}

fn b_fetch(s: u32, col0: u32, k0: u32) -> vec4<f32> {
    if s >= B_SLOTS {
        return vec4(0.0);
    }
    if TRANS_B {
        return b_along_k(k0 + 4u * (s % BK4), col0 + s / BK4);
    }
    return b_along_n(k0 + s / BN4, col0 + 4u * (s % BN4));
}

fn b_stash(s: u32, v: vec4<f32>) {
    if s >= B_SLOTS {
        return;
    }
    if !TRANS_B {
        b_tile[s] = v;
        return;
    }
    let col = s / BK4;
    let kq = s % BK4;
    for (var i = 0u; i < 4u; i++) {
        b_tile[(4u * kq + i) * BN4 + col / 4u][col % 4u] = v[i];
    }
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tid = lid.y * WG_X + lid.x;
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    // The thread's place in the grid of threads, which decides the outputs it computes (the
    // loads into workgroup memory go by `tid`).
    var tx = lid.x;
    var ty = lid.y;
    if WARP == 1u {
        let warp = tid / 32u;
        let lane = tid % 32u;
        // max: never a division by zero, even in this branch's dead copies (WG_X < 8).
        let warps_x = max(WG_X / 8u, 1u);
        tx = (warp % warps_x) * 8u + lane % 8u;
        ty = (warp / warps_x) * 4u + lane / 8u;
    }

    // acc[r·4 + i][cn] holds row (run r, offset i) × columns of run cn.
    var acc: array<array<vec4<f32>, RN>, TM>;
    var a_reg: array<vec4<f32>, RM>;
    var b_reg: array<vec4<f32>, RN>;
    // The slots this thread fetched and has yet to write to workgroup memory.
    var a_next: array<vec4<f32>, A_LOADS>;
    var b_next: array<vec4<f32>, B_LOADS>;

    // This workgroup's run of k: all of it, or with PARTIAL run z.
    var k_begin = 0u;
    var k_end = params.k;
    if PARTIAL {
        k_begin = wg.z * params.k_chunk;
        k_end = min(k_begin + params.k_chunk, params.k);
    }

    for (var j = 0u; j < A_LOADS; j++) {
        a_next[j] = a_fetch(j * THREADS + tid, row0, k_begin);
    }
    for (var j = 0u; j < B_LOADS; j++) {
        b_next[j] = b_fetch(j * THREADS + tid, col0, k_begin);
    }
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        for (var j = 0u; j < A_LOADS; j++) {
            a_stash(j * THREADS + tid, a_next[j]);
        }
        for (var j = 0u; j < B_LOADS; j++) {
            b_stash(j * THREADS + tid, b_next[j]);
        }
        workgroupBarrier();

        // The next tile's loads, in flight while this tile's products run. The last tile's
        // overhang past k reads zeros (the bounds in a_along_k & co.).
        let k_next = k0 + BK;
        if k_next < k_end {
            for (var j = 0u; j < A_LOADS; j++) {
                a_next[j] = a_fetch(j * THREADS + tid, row0, k_next);
            }
            for (var j = 0u; j < B_LOADS; j++) {
                b_next[j] = b_fetch(j * THREADS + tid, col0, k_next);
            }
        }

        // inner loop: begin
        for (var kk = 0u; kk < BK; kk++) {
            for (var r = 0u; r < RM; r++) {
                a_reg[r] = a_tile[kk * BM4 + r * WG_Y + ty];
            }
            for (var cn = 0u; cn < RN; cn++) {
                b_reg[cn] = b_tile[kk * BN4 + cn * WG_X + tx];
            }
            for (var r = 0u; r < RM; r++) {
                for (var i = 0u; i < 4u; i++) {
                    let av = vec4(a_reg[r][i]);
                    for (var cn = 0u; cn < RN; cn++) {
                        acc[r * 4u + i][cn] = fma(av, b_reg[cn], acc[r * 4u + i][cn]);
                    }
                }
            }
        }
        // inner loop: end
        workgroupBarrier();
    }

    for (var r = 0u; r < RM; r++) {
        for (var i = 0u; i < 4u; i++) {
            let row = row0 + (r * WG_Y + ty) * 4u + i;
            if row >= params.m {
                continue;
            }
            for (var cn = 0u; cn < RN; cn++) {
                let col = col0 + (cn * WG_X + tx) * 4u;
                let v = acc[r * 4u + i][cn];
                for (var j = 0u; j < 4u; j++) {
                    if col + j < params.n {
                        let at = row * params.n + col + j;
                        if PARTIAL {
                            c[wg.z * params.m * params.n + at] = v[j];
                            continue;
                        }
                        var out = v[j];
                        if params.use_bias != 0u {
                            out += bias[col + j];
                        }
                        if EPI == 2u {
                            out = act_grad(ACT, out, bias[at], params.alpha);
                        }
                        c[at] = out;
                        if EPI == 1u {
                            y[at] = activate(ACT, out, params.alpha);
                        }
                    }
                }
            }
        }
    }
}

// ---- split-k's second pass ----
//
// matmul_split_sum: C = Σ_z partial[z] in z order (+ bias[col]), then the epilogue above, one
// thread per output. The partial products come from `matmul` with PARTIAL. Launched without
// the tile defines, so its module is compiled once whatever tile the product used.

// [splits, M, N]
@group(1) @binding(0) var<storage, read> partial: array<f32>;
// bias[N]; with EPI = 2 instead V[M,N], laid out as C.
@group(1) @binding(1) var<storage, read> sum_bias: array<f32>;
@group(1) @binding(2) var<storage, read_write> sum_c: array<f32>;
// act(C) when EPI = 1 (a placeholder otherwise).
@group(1) @binding(3) var<storage, read_write> sum_y: array<f32>;
@group(1) @binding(4) var<uniform> sum_params: MatmulParams;

@compute @workgroup_size(256)
fn matmul_split_sum(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let at = gid.y * nwg.x * 256u + gid.x;
    let len = sum_params.m * sum_params.n;
    if at >= len {
        return;
    }
    var out = partial[at];
    for (var z = 1u; z < sum_params.splits; z++) {
        out += partial[z * len + at];
    }
    if sum_params.use_bias != 0u {
        out += sum_bias[at % sum_params.n];
    }
    if EPI == 2u {
        out = act_grad(ACT, out, sum_bias[at], sum_params.alpha);
    }
    sum_c[at] = out;
    if EPI == 1u {
        sum_y[at] = activate(ACT, out, sum_params.alpha);
    }
}
