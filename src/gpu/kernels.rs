//! The table of WGSL kernels: which file, which entry point, which bindings. Pipelines are
//! built from these on first use and cached per device (`GpuContext::pipeline`).

use super::BufferRange;
use super::matmul_tiles::{TileConfig, split_chunks};
use crate::error::{KilnError, Result};
use crate::ops::{Activation, Loss, MatmulDims, Targets, Transpose};
use crate::optim::UpdateUniform;

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`
    Uniform,
}

/// One compute entry point and its bind group layout.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// The file in `shaders/`.
    pub file: &'static str,
    /// Its WGSL source, compiled in.
    pub source: &'static str,
    /// The entry point.
    pub entry: &'static str,
    /// The bind group index the entry point's bindings live in (files with two layouts use
    /// group 0 for one and group 1 for the other, since WGSL forbids two variables at one
    /// binding).
    pub group: u32,
    /// Each binding's use, in binding order (the uniform block last).
    pub bindings: &'static [Binding],
}

use Binding::{Read, ReadWrite, Uniform};

// Files whose first lines say `// prelude: act_fn.wgsl` are compiled behind it.
const MATMUL_SRC: &str = concat!(
    include_str!("../../shaders/act_fn.wgsl"),
    include_str!("../../shaders/matmul.wgsl")
);
const BIAS_SRC: &str = include_str!("../../shaders/bias.wgsl");
const ACTIVATION_SRC: &str = concat!(
    include_str!("../../shaders/act_fn.wgsl"),
    include_str!("../../shaders/activation.wgsl")
);
const LOSS_SRC: &str = include_str!("../../shaders/loss.wgsl");
const NORM_SRC: &str = include_str!("../../shaders/norm.wgsl");
const COPY_SRC: &str = include_str!("../../shaders/copy.wgsl");
const GATHER_SRC: &str = include_str!("../../shaders/gather.wgsl");

/// a, b, a as vec4s, b as vec4s, bias (or V of a fused activation gradient), c, y (a fused
/// activation's output), params
pub static MATMUL: Kernel = Kernel {
    file: "matmul.wgsl",
    source: MATMUL_SRC,
    entry: "matmul",
    group: 0,
    bindings: &[Read, Read, Read, Read, Read, ReadWrite, ReadWrite, Uniform],
};

/// partial products, bias (or V of a fused activation gradient), c, y, params
pub static MATMUL_SPLIT_SUM: Kernel = Kernel {
    file: "matmul.wgsl",
    source: MATMUL_SRC,
    entry: "matmul_split_sum",
    group: 1,
    bindings: &[Read, Read, ReadWrite, ReadWrite, Uniform],
};

/// dy, the parts' sums (or db), params
pub static BIAS_GRAD_PARTIAL: Kernel = Kernel {
    file: "bias.wgsl",
    source: BIAS_SRC,
    entry: "bias_grad_partial",
    group: 0,
    bindings: &[Read, ReadWrite, Uniform],
};

/// the parts' sums, db, params
pub static BIAS_GRAD_FINAL: Kernel = Kernel {
    file: "bias.wgsl",
    source: BIAS_SRC,
    entry: "bias_grad_final",
    group: 1,
    bindings: &[Read, ReadWrite, Uniform],
};

/// values, history, params
pub static LOSS_REDUCE: Kernel = Kernel {
    file: "loss.wgsl",
    source: LOSS_SRC,
    entry: "loss_reduce",
    group: 1,
    bindings: &[Read, ReadWrite, Uniform],
};

/// src, dst, params
pub static COPY: Kernel = Kernel {
    file: "copy.wgsl",
    source: COPY_SRC,
    entry: "copy",
    group: 0,
    bindings: &[Read, ReadWrite, Uniform],
};

/// src, dst as vec4s, params
pub static COPY4: Kernel = Kernel {
    file: "copy.wgsl",
    source: COPY_SRC,
    entry: "copy4",
    group: 1,
    bindings: &[Read, ReadWrite, Uniform],
};

/// src, order, dst, params
pub static GATHER: Kernel = Kernel {
    file: "gather.wgsl",
    source: GATHER_SRC,
    entry: "gather",
    group: 0,
    bindings: &[Read, Read, ReadWrite, Uniform],
};

/// x, partials, params
pub static SUM_SQUARES_PARTIAL: Kernel = Kernel {
    file: "norm.wgsl",
    source: NORM_SRC,
    entry: "sum_squares_partial",
    group: 0,
    bindings: &[Read, ReadWrite, Uniform],
};

/// partials, history, params
pub static SUM_SQUARES_FINAL: Kernel = Kernel {
    file: "norm.wgsl",
    source: NORM_SRC,
    entry: "sum_squares_final",
    group: 1,
    bindings: &[Read, ReadWrite, Uniform],
};

/// grad, norm_sq history, params
pub static CLIP: Kernel = Kernel {
    file: "norm.wgsl",
    source: NORM_SRC,
    entry: "clip",
    group: 2,
    bindings: &[ReadWrite, Read, Uniform],
};

macro_rules! activation_kernels {
    ($( $fwd:ident $bwd:ident $entry_f:literal $entry_b:literal ),* $(,)?) => {
        $(
            /// x, y, params
            pub static $fwd: Kernel = Kernel {
                file: "activation.wgsl", source: ACTIVATION_SRC, entry: $entry_f, group: 0,
                bindings: &[Read, ReadWrite, Uniform],
            };
            /// x, y, dy, dx, params
            pub static $bwd: Kernel = Kernel {
                file: "activation.wgsl", source: ACTIVATION_SRC, entry: $entry_b, group: 1,
                bindings: &[Read, Read, Read, ReadWrite, Uniform],
            };
        )*
    };
}

activation_kernels!(
    IDENTITY_FORWARD IDENTITY_BACKWARD "identity_forward" "identity_backward",
    RELU_FORWARD RELU_BACKWARD "relu_forward" "relu_backward",
    LEAKY_RELU_FORWARD LEAKY_RELU_BACKWARD "leaky_relu_forward" "leaky_relu_backward",
    SIGMOID_FORWARD SIGMOID_BACKWARD "sigmoid_forward" "sigmoid_backward",
    TANH_FORWARD TANH_BACKWARD "tanh_forward" "tanh_backward",
    GELU_FORWARD GELU_BACKWARD "gelu_forward" "gelu_backward",
    GELU_TANH_FORWARD GELU_TANH_BACKWARD "gelu_tanh_forward" "gelu_tanh_backward",
    SOFTMAX_FORWARD SOFTMAX_BACKWARD "softmax_forward" "softmax_backward",
);

macro_rules! loss_kernels {
    ($( $name:ident $entry:literal ),* $(,)?) => {
        $(
            /// output, targets, terms, grad, params
            pub static $name: Kernel = Kernel {
                file: "loss.wgsl", source: LOSS_SRC, entry: $entry, group: 0,
                bindings: &[Read, Read, ReadWrite, ReadWrite, Uniform],
            };
        )*
    };
}

loss_kernels!(
    MSE "mse",
    BCE "bce",
    BCE_WITH_LOGITS "bce_with_logits",
    CROSS_ENTROPY "cross_entropy",
);

/// Every kernel the engine dispatches apart from the optimizers' (`crate::optim::kernels`);
/// tests/shaders.rs checks each entry point exists.
pub static ALL: [&Kernel; 31] = [
    &MATMUL,
    &MATMUL_SPLIT_SUM,
    &COPY,
    &COPY4,
    &GATHER,
    &SUM_SQUARES_PARTIAL,
    &SUM_SQUARES_FINAL,
    &CLIP,
    &BIAS_GRAD_PARTIAL,
    &BIAS_GRAD_FINAL,
    &LOSS_REDUCE,
    &IDENTITY_FORWARD,
    &IDENTITY_BACKWARD,
    &RELU_FORWARD,
    &RELU_BACKWARD,
    &LEAKY_RELU_FORWARD,
    &LEAKY_RELU_BACKWARD,
    &SIGMOID_FORWARD,
    &SIGMOID_BACKWARD,
    &TANH_FORWARD,
    &TANH_BACKWARD,
    &GELU_FORWARD,
    &GELU_BACKWARD,
    &GELU_TANH_FORWARD,
    &GELU_TANH_BACKWARD,
    &SOFTMAX_FORWARD,
    &SOFTMAX_BACKWARD,
    &MSE,
    &BCE,
    &BCE_WITH_LOGITS,
    &CROSS_ENTROPY,
];

/// The forward kernel of an activation.
pub fn activation_forward_kernel(act: Activation) -> &'static Kernel {
    match act {
        Activation::Identity => &IDENTITY_FORWARD,
        Activation::Relu => &RELU_FORWARD,
        Activation::LeakyRelu(_) => &LEAKY_RELU_FORWARD,
        Activation::Sigmoid => &SIGMOID_FORWARD,
        Activation::Tanh => &TANH_FORWARD,
        Activation::Gelu => &GELU_FORWARD,
        Activation::GeluTanh => &GELU_TANH_FORWARD,
        Activation::Softmax => &SOFTMAX_FORWARD,
    }
}

/// The backward kernel of an activation.
pub fn activation_backward_kernel(act: Activation) -> &'static Kernel {
    match act {
        Activation::Identity => &IDENTITY_BACKWARD,
        Activation::Relu => &RELU_BACKWARD,
        Activation::LeakyRelu(_) => &LEAKY_RELU_BACKWARD,
        Activation::Sigmoid => &SIGMOID_BACKWARD,
        Activation::Tanh => &TANH_BACKWARD,
        Activation::Gelu => &GELU_BACKWARD,
        Activation::GeluTanh => &GELU_TANH_BACKWARD,
        Activation::Softmax => &SOFTMAX_BACKWARD,
    }
}

/// The kernel that computes a loss's terms and gradient.
pub fn loss_kernel(loss: Loss) -> &'static Kernel {
    match loss {
        Loss::Mse => &MSE,
        Loss::Bce => &BCE,
        Loss::BceWithLogits => &BCE_WITH_LOGITS,
        Loss::CrossEntropy => &CROSS_ENTROPY,
    }
}

// ---- uniform blocks, laid out as the WGSL structs ----

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub use_bias: u32,
    /// leaky_relu's slope, when the launch fuses it.
    pub alpha: f32,
    /// Split-k: the k values each split takes, and the splits.
    pub k_chunk: u32,
    pub splits: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct BiasParams {
    pub rows: u32,
    pub cols: u32,
    pub parts: u32,
    pub _pad: u32,
}

/// Shared by activation.wgsl's ActParams and loss.wgsl's LossParams (same layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ElementwiseParams {
    pub len: u32,
    pub cols: u32,
    /// leaky_relu's slope (activations) or 1/divisor (losses).
    pub scalar: f32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceParams {
    pub count: u32,
    pub slot: u32,
    pub scale: f32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PartialParams {
    pub len: u32,
    pub groups: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct FinalParams {
    pub count: u32,
    pub slot: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ClipParams {
    pub len: u32,
    pub slot: u32,
    pub max_norm: f32,
    pub _pad: u32,
}

/// Threads per workgroup of the elementwise kernels.
pub(crate) const ELEMENTWISE_WORKGROUP: u32 = 256;

/// Everything about one kernel launch except its buffers: which pipeline, the contents of its
/// uniform block (always its last binding) and the workgroup grid. Built by the functions below,
/// used both by one-off kernel calls and by recorded training steps.
#[derive(Clone, Debug)]
pub struct Launch {
    /// What runs.
    pub kernel: &'static Kernel,
    /// Pipeline override constants (the matmul's transposes, vec4 loads and epilogue).
    pub constants: Vec<(&'static str, f64)>,
    /// `const NAME: u32` lines of the source to rewrite (the matmul's tile shape); each set
    /// of values is compiled as its own shader module.
    pub defines: Vec<(&'static str, u32)>,
    /// The bytes of the uniform block.
    pub uniform: Vec<u8>,
    /// Workgroups in x, y, z.
    pub grid: [u32; 3],
}

impl Launch {
    fn new<T: bytemuck::Pod>(kernel: &'static Kernel, uniform: &T, grid: [u32; 3]) -> Self {
        Launch {
            kernel,
            constants: Vec::new(),
            defines: Vec::new(),
            uniform: bytemuck::bytes_of(uniform).to_vec(),
            grid,
        }
    }
}

/// `source` with the value of each `const NAME: u32 = …;` line named in `defines` replaced.
/// A name without such a line is left alone (tests/shaders.rs checks every tile shape's
/// source names its constants). With `UNROLL = 1` (and the matmul's `BK`, `TM` and `TN`
/// among the defines), the lines between `// inner loop: begin` and `// inner loop: end` are
/// replaced by [`unrolled_inner_loop`].
pub fn with_defines<'a>(
    source: &'a str,
    defines: &[(&'static str, u32)],
) -> std::borrow::Cow<'a, str> {
    if defines.is_empty() {
        return source.into();
    }
    let define = |name: &str| defines.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let unrolled = match (define("UNROLL"), define("BK"), define("TM"), define("TN")) {
        (Some(1), Some(bk), Some(tm), Some(tn)) => Some(unrolled_inner_loop(bk, tm, tn)),
        _ => None,
    };
    let mut out = Vec::new();
    let mut skipping = false;
    debug_assert!(
        unrolled.is_none() || source.contains("// inner loop: begin"),
        "UNROLL = 1 on a source without the inner loop's markers"
    );
    for line in source.lines() {
        if let Some(body) = &unrolled {
            if line.trim() == "// inner loop: begin" {
                skipping = true;
                out.push(body.trim_end_matches('\n').to_string());
                continue;
            }
            if line.trim() == "// inner loop: end" {
                skipping = false;
                continue;
            }
        }
        if skipping {
            continue;
        }
        out.push(
            defines
                .iter()
                .find(|(name, _)| line.starts_with(&format!("const {name}: u32 = ")))
                .map_or_else(
                    || line.to_string(),
                    |(name, value)| format!("const {name}: u32 = {value}u;"),
                ),
        );
    }
    debug_assert!(!skipping, "the inner loop's begin marker has no end marker");
    out.join("\n").into()
}

/// shaders/matmul.wgsl's loop over kk for a tile of depth `bk` and `tm`×`tn` outputs a thread,
/// written out: each k's workgroup-memory reads into `let`s, then each output's fma, every
/// index a constant. The same fmas in the same order for each output as the loop, so the same
/// values; for drivers that leave the loop rolled and the register blocks in memory.
pub fn unrolled_inner_loop(bk: u32, tm: u32, tn: u32) -> String {
    use std::fmt::Write;
    let (rm, rn) = (tm / 4, tn / 4);
    let mut s = String::from("        // inner loop, unrolled by the host (UNROLL = 1)\n");
    for kk in 0..bk {
        for r in 0..rm {
            let _ = writeln!(
                s,
                "        let a{kk}_{r} = a_tile[{kk}u * BM4 + {r}u * WG_Y + ty];"
            );
        }
        for cn in 0..rn {
            let _ = writeln!(
                s,
                "        let b{kk}_{cn} = b_tile[{kk}u * BN4 + {cn}u * WG_X + tx];"
            );
        }
        for r in 0..rm {
            for i in 0..4 {
                let row = r * 4 + i;
                for cn in 0..rn {
                    let _ = writeln!(
                        s,
                        "        acc[{row}][{cn}] = fma(vec4(a{kk}_{r}[{i}]), b{kk}_{cn}, \
                         acc[{row}][{cn}]);"
                    );
                }
            }
        }
    }
    s
}

/// Workgroup grid for `threads` elementwise threads, folded into a second dimension past the
/// per-dimension limit (the kernels rebuild the flat index from `num_workgroups`).
pub(crate) fn elementwise_grid(threads: usize, max_per_dim: u32) -> [u32; 3] {
    let groups = threads.div_ceil(ELEMENTWISE_WORKGROUP as usize).max(1) as u64;
    let max = max_per_dim as u64;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

/// C[m,n] = op(A)·op(B) (+ bias) with one tile shape: the product's launch, and with split-k
/// (see [`split_chunks`]) a second that adds the partial products. The split goes by
/// `recorded`, the largest dims the launches are recorded for (a step's products at its
/// largest batch): whether there is a second launch, and the run of k each split takes. A
/// smaller product of that recording keeps both launches and the run, so it never has more
/// splits or partial products than the recording made room for ([`matmul_scratch_len`]); one
/// split summed alone gives the plain product's values. Errs if the output needs more
/// workgroups than a dimension allows, or if `dims` is larger than `recorded`.
pub(crate) fn matmul(
    t: Transpose,
    dims: MatmulDims,
    recorded: MatmulDims,
    use_bias: bool,
    tile: TileConfig,
    max_per_dim: u32,
) -> Result<Vec<Launch>> {
    if dims.m > recorded.m || dims.n > recorded.n || dims.k > recorded.k {
        return Err(KilnError::Gpu(format!(
            "internal: a {}x{}x{} product launched from a recording for {}x{}x{}",
            dims.m, dims.n, dims.k, recorded.m, recorded.n, recorded.k
        )));
    }
    let (k_chunk, recorded_splits) = split_chunks(recorded, tile);
    let split = recorded_splits > 1;
    let splits = dims.k.div_ceil(k_chunk).max(1);
    let grid = [
        dims.n.div_ceil(tile.bn as usize) as u32,
        dims.m.div_ceil(tile.bm as usize) as u32,
        if split { splits as u32 } else { 1 },
    ];
    if grid[0] > max_per_dim || grid[1] > max_per_dim || grid[2] > max_per_dim {
        return Err(KilnError::OverLimit {
            tensor: format!("matmul output [{}, {}]", dims.m, dims.n),
            size: (dims.m * dims.n * 4) as u64,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max_per_dim as u64,
        });
    }
    // The kernel indexes in u32: a larger dimension would be cut, not an error, past here.
    let dim = |name: &str, v: usize| {
        u32::try_from(v).map_err(|_| {
            KilnError::invalid(
                "matmul",
                format!(
                    "{name} = {v} is over the GPU kernel's limit of {}",
                    u32::MAX
                ),
            )
        })
    };
    let params = MatmulParams {
        m: dim("M", dims.m)?,
        n: dim("N", dims.n)?,
        k: dim("K", dims.k)?,
        use_bias: use_bias as u32,
        k_chunk: k_chunk as u32,
        splits: splits as u32,
        ..Default::default()
    };
    let (trans_a, trans_b) = match t {
        Transpose::Nn => (false, false),
        Transpose::Tn => (true, false),
        Transpose::Nt => (false, true),
    };
    // A vec4 must lie within one stored row: the stored matrix's contiguous dimension must be
    // a multiple of 4 (A stored [M,K] or [K,M], B stored [K,N] or [N,K]).
    let vec_a = tile.vec4 && (if trans_a { dims.m } else { dims.k }).is_multiple_of(4);
    let vec_b = tile.vec4 && (if trans_b { dims.k } else { dims.n }).is_multiple_of(4);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let product_params = MatmulParams {
        // The bias is the sum's to add.
        use_bias: if split { 0 } else { params.use_bias },
        ..params
    };
    let mut product = Launch::new(&MATMUL, &product_params, grid);
    product.constants = vec![
        ("TRANS_A", flag(trans_a)),
        ("TRANS_B", flag(trans_b)),
        ("VEC_A", flag(vec_a)),
        ("VEC_B", flag(vec_b)),
    ];
    if split {
        product.constants.push(("PARTIAL", 1.0));
    }
    product.defines = tile.defines();
    if !split {
        return Ok(vec![product]);
    }
    let sum = Launch::new(
        &MATMUL_SPLIT_SUM,
        &params,
        elementwise_grid(dims.m * dims.n, max_per_dim),
    );
    Ok(vec![product, sum])
}

/// A kernel's name as refusals give it, and the most loop iterations a thread of it runs (see
/// `GpuContext::check_loops`).
pub(crate) type Loops = (String, u64);

/// [`Loops`] of [`matmul`] for `dims` and `tile`: every k of a thread's run (a driver that
/// does not unroll the inner loop counts each), and per tile step its fetches and stashes into
/// workgroup memory.
pub(crate) fn matmul_loops(dims: MatmulDims, tile: TileConfig) -> Loops {
    let (k_chunk, splits) = split_chunks(dims, tile);
    let run = if splits > 1 { k_chunk } else { dims.k } as u64;
    let threads = tile.threads() as u64;
    let loads = (tile.bk as u64 * (tile.bm + tile.bn) as u64 / 4).div_ceil(threads);
    (
        format!("matmul {}x{}x{}", dims.m, dims.n, dims.k),
        run + run.div_ceil(tile.bk as u64) * 2 * loads + 64,
    )
}

/// [`Loops`] of an activation over rows of `cols`: softmax walks its row three times forward
/// (max, sum, scale) and twice backward; the rest none.
pub(crate) fn activation_loops(act: Activation, cols: usize, backward: bool) -> Loops {
    let walks = match act {
        Activation::Softmax if backward => 2,
        Activation::Softmax => 3,
        _ => 0,
    };
    (act.name().to_string(), walks * cols as u64)
}

/// [`Loops`] of [`loss`] over `len` outputs in rows of `cols`: cross-entropy's terms walk a
/// row three times; the sum's one workgroup takes every 256th term, then halves eight times.
pub(crate) fn loss_loops(loss: Loss, len: usize, cols: usize) -> Loops {
    let (row, count) = if loss == Loss::CrossEntropy {
        (3 * cols as u64, (len / cols.max(1)) as u64)
    } else {
        (0, len as u64)
    };
    (
        format!("{} loss", loss.name()),
        row.max(count.div_ceil(256) + 8),
    )
}

/// [`Loops`] of [`bias_grad`] over `rows` rows: a part's rows, or the parts' sums.
pub(crate) fn bias_loops(rows: usize) -> Loops {
    (
        "bias gradient".to_string(),
        (crate::cpu::bias::ROWS_PER_PART as u64).max(bias_parts(rows) as u64),
    )
}

/// Floats of partial products the launches of [`matmul`] recorded for `recorded` and `tile`
/// need (splits · M · N), at `recorded` and at every smaller product launched from that
/// recording (which keeps the recording's run of k); 0 without a split.
pub(crate) fn matmul_scratch_len(recorded: MatmulDims, tile: TileConfig) -> usize {
    match split_chunks(recorded, tile).1 {
        1 => 0,
        splits => splits * recorded.m * recorded.n,
    }
}

/// The id act_fn.wgsl gives an activation the matmul can fuse into its epilogue: every one
/// that works elementwise (not softmax, which needs the whole row).
pub(crate) fn fused_activation_id(act: Activation) -> Option<u32> {
    Some(match act {
        Activation::Identity => 1,
        Activation::Relu => 2,
        Activation::LeakyRelu(_) => 3,
        Activation::Sigmoid => 4,
        Activation::Tanh => 5,
        Activation::Gelu => 6,
        Activation::GeluTanh => 7,
        Activation::Softmax => return None,
    })
}

/// `launches` (a matmul's) with `act` applied in the epilogue of the last, the one that
/// writes C: C keeps the pre-activation and Y (the binding after C) gets act(C). `act` must
/// be one [`fused_activation_id`] numbers.
pub(crate) fn fuse_activation(launches: Vec<Launch>, act: Activation) -> Vec<Launch> {
    with_epilogue(launches, 1, act)
}

/// `launches` (a bias-free matmul's, dX = dY·W) with `act`'s backward applied in the epilogue
/// of the last: C gets dX·act'(V), V bound in the bias's place
/// ([`Activation::grad_reads_output`] says whether it is the activation's input or output).
pub(crate) fn fuse_activation_grad(launches: Vec<Launch>, act: Activation) -> Vec<Launch> {
    with_epilogue(launches, 2, act)
}

fn with_epilogue(mut launches: Vec<Launch>, epilogue: u32, act: Activation) -> Vec<Launch> {
    let id = fused_activation_id(act).expect("the program fuses elementwise activations only");
    let launch = launches.last_mut().expect("a matmul has a launch");
    let mut params: MatmulParams = bytemuck::pod_read_unaligned(&launch.uniform);
    debug_assert!(
        epilogue == 1 || params.use_bias == 0,
        "V takes the bias's binding"
    );
    params.alpha = act.alpha();
    launch.uniform = bytemuck::bytes_of(&params).to_vec();
    launch.constants.push(("EPI", epilogue as f64));
    launch.constants.push(("ACT", id as f64));
    launches
}

/// The bindings of a matmul's launches ([`matmul`]), launch by launch. The product's: A, B,
/// their vec4 views (the placeholder where the launch reads scalars), the bias (V for a fused
/// activation gradient; the placeholder without either), C, then Y for a fused activation
/// (without one, a small writable buffer of the launch's own: a writable placeholder shared
/// between launches would order them). With split-k the product writes `scratch` (at least
/// [`matmul_scratch_len`] floats) in C's place and the sum reads it: scratch, bias, C, Y.
/// `a` and `b` must start at their matrices; the views cover exactly `dims`' elements, so they
/// are whole vec4s.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bindings<'a>(
    launches: &[Launch],
    dims: MatmulDims,
    a: BufferRange<'a>,
    b: BufferRange<'a>,
    bias: Option<BufferRange<'a>>,
    c: BufferRange<'a>,
    y: BufferRange<'a>,
    scratch: Option<BufferRange<'a>>,
    placeholder: &'a wgpu::Buffer,
) -> Vec<Vec<BufferRange<'a>>> {
    let product = &launches[0];
    let view = |on: &str, r: BufferRange<'a>, len: usize| {
        if product.constants.contains(&(on, 1.0)) {
            BufferRange {
                size: std::num::NonZeroU64::new((len * 4) as u64),
                ..r
            }
        } else {
            placeholder.into()
        }
    };
    let bias = bias.unwrap_or(placeholder.into());
    let (a4, b4) = (
        view("VEC_A", a, dims.m * dims.k),
        view("VEC_B", b, dims.k * dims.n),
    );
    if launches.len() == 1 {
        return vec![vec![a, b, a4, b4, bias, c, y]];
    }
    let scratch = scratch.expect("the caller allocates matmul_scratch_len for a split");
    vec![
        vec![a, b, a4, b4, placeholder.into(), scratch, y],
        vec![scratch, bias, c, y],
    ]
}

/// Parts of [`cpu::bias::ROWS_PER_PART`](crate::cpu::bias::ROWS_PER_PART) rows the bias
/// gradient of `rows` rows sums separately (at least one).
pub(crate) fn bias_parts(rows: usize) -> usize {
    rows.div_ceil(crate::cpu::bias::ROWS_PER_PART).max(1)
}

/// db[cols] = column sums of dy[rows, cols] (shaders/bias.wgsl): pass 1 alone, writing db,
/// when `max_rows` (the most rows the launches are recorded for) make one part; else both
/// passes, pass 1 writing [`bias_parts`]`(rows)·cols` sums for pass 2 (the buffer between
/// them holds `max_rows`' worth). Errs if the grid
/// needs more workgroups than a dimension allows.
pub(crate) fn bias_grad(
    rows: usize,
    cols: usize,
    max_rows: usize,
    max_per_dim: u32,
) -> Result<Vec<Launch>> {
    let parts = bias_parts(rows);
    let col_groups = cols.div_ceil(64);
    if col_groups > max_per_dim as usize || parts > max_per_dim as usize {
        return Err(KilnError::OverLimit {
            tensor: format!("bias gradient of [{rows}, {cols}]"),
            size: (rows * cols * 4) as u64,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max_per_dim as u64,
        });
    }
    let params = BiasParams {
        rows: rows as u32,
        cols: cols as u32,
        parts: parts as u32,
        _pad: 0,
    };
    let mut partial = Launch::new(
        &BIAS_GRAD_PARTIAL,
        &params,
        [col_groups as u32, parts as u32, 1],
    );
    partial.defines = bias_defines();
    if bias_parts(max_rows) == 1 {
        return Ok(vec![partial]);
    }
    let mut last = Launch::new(&BIAS_GRAD_FINAL, &params, [col_groups as u32, 1, 1]);
    last.defines = bias_defines();
    Ok(vec![partial, last])
}

/// The CPU twin's part size, compiled into the kernel so that the two cannot differ.
fn bias_defines() -> Vec<(&'static str, u32)> {
    vec![("ROWS_PER_PART", crate::cpu::bias::ROWS_PER_PART as u32)]
}

/// The bindings of [`bias_grad`]'s launches: `dy` and `db`, with `sums` between the passes
/// when there are two.
pub(crate) fn bias_grad_bindings<'a>(
    launches: &[Launch],
    dy: BufferRange<'a>,
    sums: Option<BufferRange<'a>>,
    db: BufferRange<'a>,
) -> Vec<Vec<BufferRange<'a>>> {
    if launches.len() == 1 {
        return vec![vec![dy, db]];
    }
    let sums = sums.expect("the caller allocates the sums wherever bias_grad makes two passes");
    vec![vec![dy, sums], vec![sums, db]]
}

fn activation(
    kernel: &'static Kernel,
    act: Activation,
    len: usize,
    cols: usize,
    max_per_dim: u32,
) -> Launch {
    let params = ElementwiseParams {
        len: len as u32,
        cols: cols as u32,
        scalar: act.alpha(),
        _pad: 0,
    };
    // One thread per element, or per row for softmax.
    let threads = if act == Activation::Softmax {
        len / cols
    } else {
        len
    };
    Launch::new(kernel, &params, elementwise_grid(threads, max_per_dim))
}

/// y = act(x), `len` elements in rows of `cols`.
pub(crate) fn activation_forward(
    act: Activation,
    len: usize,
    cols: usize,
    max_per_dim: u32,
) -> Launch {
    activation(activation_forward_kernel(act), act, len, cols, max_per_dim)
}

/// dx = dy·act'(x).
pub(crate) fn activation_backward(
    act: Activation,
    len: usize,
    cols: usize,
    max_per_dim: u32,
) -> Launch {
    activation(activation_backward_kernel(act), act, len, cols, max_per_dim)
}

/// The two passes of a loss over an output of `len` elements in rows of `cols`: terms and
/// gradient, then the mean into history slot `slot`.
pub(crate) fn loss(
    loss: Loss,
    len: usize,
    cols: usize,
    slot: u32,
    max_per_dim: u32,
) -> (Launch, Launch) {
    let rows = len / cols;
    let (count, divisor) = if loss == Loss::CrossEntropy {
        (rows, rows)
    } else {
        (len, len)
    };
    let scale = 1.0 / divisor as f32;
    let terms = ElementwiseParams {
        len: len as u32,
        cols: cols as u32,
        scalar: scale,
        _pad: 0,
    };
    let reduce = ReduceParams {
        count: count as u32,
        slot,
        scale,
        _pad: 0,
    };
    (
        Launch::new(
            loss_kernel(loss),
            &terms,
            elementwise_grid(count, max_per_dim),
        ),
        Launch::new(&LOSS_REDUCE, &reduce, [1, 1, 1]),
    )
}

/// dst ← src over `len` floats: a vec4 per thread when `len` is a positive multiple of 4 (the
/// buffers are then whole vec4s), a float per thread otherwise.
pub(crate) fn copy(len: usize, max_per_dim: u32) -> Launch {
    let (kernel, threads) = if len > 0 && len.is_multiple_of(4) {
        (&COPY4, len / 4)
    } else {
        (&COPY, len)
    };
    Launch::new(
        kernel,
        &[threads as u32, 0, 0, 0],
        elementwise_grid(threads, max_per_dim),
    )
}

/// The buffers of an optimizer kernel in binding order (`crate::optim::update_bindings`):
/// parameters, gradients, loss history, no-decay ranges, then the state tensors.
pub(crate) fn update_bindings<'a>(
    params: BufferRange<'a>,
    grads: BufferRange<'a>,
    history: &'a wgpu::Buffer,
    no_decay: &'a wgpu::Buffer,
    state: impl IntoIterator<Item = BufferRange<'a>>,
) -> Vec<BufferRange<'a>> {
    let mut b: Vec<BufferRange<'a>> = vec![params, grads, history.into(), no_decay.into()];
    b.extend(state);
    b
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    start: u32,
    rows: u32,
    cols: u32,
    _pad: u32,
}

/// Rows `order[start..start + rows]` of a resident [N, cols] data set into a batch buffer.
pub(crate) fn gather(start: usize, rows: usize, cols: usize, max_per_dim: u32) -> Launch {
    let params = GatherParams {
        start: start as u32,
        rows: rows as u32,
        cols: cols as u32,
        _pad: 0,
    };
    Launch::new(&GATHER, &params, elementwise_grid(rows * cols, max_per_dim))
}

/// One optimizer update of the whole arena with `kernel`, the uniform block the host computed.
pub(crate) fn update(kernel: &'static Kernel, uniform: &UpdateUniform, max_per_dim: u32) -> Launch {
    Launch::new(
        kernel,
        uniform,
        elementwise_grid(uniform.len as usize, max_per_dim),
    )
}

/// Workgroups of the first norm pass: enough to fill a GPU, few enough that one workgroup
/// sums their partials quickly. Depends only on the length, so sums are reproducible.
pub(crate) fn norm_groups(len: usize) -> usize {
    len.div_ceil(256 * 4).clamp(1, 256)
}

/// ‖x‖² of `len` elements into history slot `slot`: the two reduction passes. The first
/// writes `norm_groups(len)` partials.
pub(crate) fn sum_squares(len: usize, slot: u32) -> (Launch, Launch) {
    let groups = norm_groups(len);
    let partial = PartialParams {
        len: len as u32,
        groups: groups as u32,
    };
    (
        Launch::new(&SUM_SQUARES_PARTIAL, &partial, [groups as u32, 1, 1]),
        sum_squares_final(groups, slot),
    )
}

/// The second pass of [`sum_squares`] alone, over `count` partials.
pub(crate) fn sum_squares_final(count: usize, slot: u32) -> Launch {
    let last = FinalParams {
        count: count as u32,
        slot,
    };
    Launch::new(&SUM_SQUARES_FINAL, &last, [1, 1, 1])
}

/// g ← g·min(max_norm/(√(norm_sq[slot]) + 1e-6), 1) over `len` elements.
pub(crate) fn clip(len: usize, slot: u32, max_norm: f32, max_per_dim: u32) -> Launch {
    let params = ClipParams {
        len: len as u32,
        slot,
        max_norm,
        _pad: 0,
    };
    Launch::new(&CLIP, &params, elementwise_grid(len, max_per_dim))
}

/// Targets as the loss kernels read them: values as they are, class labels as f32 (exact for
/// the class counts `ops::check_labels` allows).
pub(crate) fn targets_as_f32(targets: Targets<'_>) -> std::borrow::Cow<'_, [f32]> {
    match targets {
        // Borrowed: a training step uploads these every update, so no copy on the way.
        Targets::Values(v) => std::borrow::Cow::Borrowed(v),
        Targets::Classes(c) => c.iter().map(|&l| l as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels rebuild i = gid.y·(num_workgroups.x·256) + gid.x: the grid must cover every
    /// thread without exceeding the per-dimension limit.
    #[test]
    fn elementwise_grid_covers_every_thread_within_the_limit() {
        for (threads, max) in [
            (1, 65535),
            (256, 65535),
            (257, 65535),
            (65535 * 256 + 1, 65535),
            (100_000_000, 65535),
            (10_000, 7),
        ] {
            let [x, y, z] = elementwise_grid(threads, max);
            assert!(x <= max && y <= max && z == 1, "{threads}: {x}×{y}");
            assert!(
                x as usize * y as usize * 256 >= threads,
                "{threads}: {x}×{y} too small"
            );
            // No whole row of workgroups is wasted.
            assert!(
                (x as usize * (y as usize - 1)) * 256 < threads,
                "{threads}: {x}×{y} too large"
            );
        }
    }

    /// The matmul's uniform block as the host writes it is the WGSL struct, size for size
    /// (a field added on one side only would shift every later one), and the kernel table
    /// lists every binding the shader declares.
    #[test]
    fn matmul_params_match_the_shader() {
        for kernel in [&MATMUL, &MATMUL_SPLIT_SUM] {
            let module = naga::front::wgsl::parse_str(kernel.source).unwrap();
            let mut bindings: Vec<(u32, naga::AddressSpace, u32)> = module
                .global_variables
                .iter()
                .filter_map(|(_, v)| {
                    let b = v.binding.as_ref().filter(|b| b.group == kernel.group)?;
                    Some((
                        b.binding,
                        v.space,
                        module.types[v.ty].inner.size(module.to_ctx()),
                    ))
                })
                .collect();
            bindings.sort_by_key(|b| b.0);
            assert_eq!(bindings.len(), kernel.bindings.len(), "{}", kernel.file);
            let (_, space, size) = *bindings.last().unwrap();
            assert_eq!(space, naga::AddressSpace::Uniform);
            assert_eq!(size as usize, std::mem::size_of::<MatmulParams>());
        }
    }

    /// A product launched from a split recording at smaller dims (a step's shorter batch: a
    /// smaller k for the weight gradient, a smaller M for the forward product) keeps the
    /// recording's run of k, so it never has more splits, or partial products, than the
    /// recording's buffer holds; and it has the recording's number of launches.
    #[test]
    fn smaller_products_of_a_split_recording_fit_its_partial_products() {
        use super::super::matmul_tiles::CANDIDATES;
        let tile = CANDIDATES[6].split_k(4);
        for recorded in [
            MatmulDims {
                m: 70,
                n: 300,
                k: 300,
            },
            MatmulDims {
                m: 1280,
                n: 4096,
                k: 4096,
            },
            MatmulDims {
                m: 600,
                n: 10,
                k: 600,
            },
        ] {
            let room = matmul_scratch_len(recorded, tile);
            assert!(room > 0, "{recorded:?} splits");
            let ms = [1, recorded.m / 2, recorded.m - 1, recorded.m];
            for k in (1..=recorded.k).step_by(7).chain([recorded.k]) {
                for &m in &ms {
                    let dims = MatmulDims { k, m, ..recorded };
                    let launches =
                        matmul(Transpose::Tn, dims, recorded, true, tile, 65535).unwrap();
                    assert_eq!(launches.len(), 2, "{dims:?}");
                    let splits = launches[0].grid[2] as usize;
                    let params: MatmulParams = bytemuck::pod_read_unaligned(&launches[1].uniform);
                    assert_eq!(params.splits as usize, splits);
                    assert_eq!(params.k_chunk as usize, split_chunks(recorded, tile).0);
                    assert!(splits * dims.m * dims.n <= room, "{dims:?} of {recorded:?}");
                }
            }
        }
        // Larger than the recording is an error, not a launch past its buffers.
        let recorded = MatmulDims {
            m: 70,
            n: 300,
            k: 300,
        };
        let over = MatmulDims { k: 301, ..recorded };
        assert!(matmul(Transpose::Tn, over, recorded, false, tile, 65535).is_err());
    }

    #[test]
    fn matmul_grid_over_the_limit_is_an_error() {
        let dims = MatmulDims {
            m: 64 * 70_000,
            n: 1,
            k: 1,
        };
        let tile = super::super::matmul_tiles::CANDIDATES[2];
        let e = matmul(Transpose::Nn, dims, dims, false, tile, 65535)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_compute_workgroups_per_dimension"), "{e}");
    }
}
