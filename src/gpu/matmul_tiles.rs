//! The matmul kernel's tile shapes, and which one each adapter uses.
//!
//! `shaders/matmul.wgsl` is compiled once per tile shape ([`TileConfig`]). Which shape is fastest
//! depends on the adapter (registers, workgroup memory, how many workgroups it runs at once) and
//! on the size of the output (big tiles reuse more data; small tiles keep more cores busy), so
//! Kiln measures: the first time a device multiplies matrices, every shape that fits the
//! adapter's limits is timed on one product per output-size class ([`SizeClass`]), and the
//! fastest of each class is kept in memory and in `~/.cache/kiln/matmul-tiles.json`, keyed by
//! adapter, driver and kernel source. Later runs read the file. Every shape gives the same
//! values (each output is one fma chain over k in order), so the choice changes speed only.
//! Split-k ([`TileConfig::split`]) is the exception, offered to the tuner of single products
//! only (unless forced): its values are the same on every shape for one split, but differ from
//! the plain product's by rounding. So with split-k on (the default), which values a product
//! gives depends on what its tuning measured, cached per adapter; `KILN_SPLIT_K=0`
//! ([`AdapterOptions::split_k`]) keeps every product unsplit, the same values whatever the
//! tuner picks.
//!
//! `KILN_MATMUL_TILES=128x128x8/8x8` ([`AdapterOptions::matmul_tiles`], read by
//! [`AdapterOptions::from_env`]) forces one shape for every product (`/scalar` turns off the
//! vec4 loads, `/warp` groups each warp's threads 4×8, `/split4` splits k up to 4 ways,
//! `/unroll` has the host write out the inner loop);
//! `KILN_CACHE_DIR` moves the cache; `kiln tune` measures again and prints the table.
//!
//! [`AdapterOptions::split_k`]: crate::AdapterOptions::split_k
//! [`AdapterOptions::matmul_tiles`]: crate::AdapterOptions::matmul_tiles
//! [`AdapterOptions::from_env`]: crate::AdapterOptions::from_env

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::ops::MatmulDims;

/// One tile shape of the matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileConfig {
    /// Rows of C per workgroup.
    pub bm: u32,
    /// Columns of C per workgroup.
    pub bn: u32,
    /// Values of k per pass through workgroup memory.
    pub bk: u32,
    /// Rows of C per thread (4, 8 or 16).
    pub tm: u32,
    /// Columns of C per thread (4, 8 or 16).
    pub tn: u32,
    /// Load A and B as vec4s where their layout allows it.
    pub vec4: bool,
    /// Each run of 32 threads holds a 4×8 block of the workgroup's threads rather than two
    /// rows of them (fewer distinct reads of workgroup memory per warp). Not among
    /// [`CANDIDATES`] until a GPU has shown it faster; `KILN_MATMUL_TILES=…/warp` forces it.
    #[serde(default)]
    pub warp: bool,
    /// Split-k: up to this many workgroups share each tile of C, each taking its own run of
    /// k, and a second kernel adds their partial products (see [`split_chunks`]). 1: no
    /// split. Splitting changes rounding (the sum of a few fma chains in place of one), so the
    /// tuner offers it only per product ([`shape_tuning_variants`]), for products with few
    /// tiles of C and a long k.
    #[serde(default = "no_split", skip_serializing_if = "is_no_split")]
    pub split: u32,
    /// The loop over each k step's values written out by the host, every register index a
    /// constant ([`crate::gpu::kernels::unrolled_inner_loop`]), for a driver that leaves it
    /// rolled. Not among [`CANDIDATES`] until a GPU has shown it faster; `…/unroll` forces it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unroll: bool,
}

fn no_split() -> u32 {
    1
}

fn is_no_split(split: &u32) -> bool {
    *split == 1
}

const fn shape(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> TileConfig {
    TileConfig {
        bm,
        bn,
        bk,
        tm,
        tn,
        vec4: true,
        warp: false,
        split: 1,
        unroll: false,
    }
}

/// The shapes the tuner tries (each also with scalar loads). From 64 threads holding 4×4
/// outputs each, for small products and small adapters, to 256 threads holding 8×8 over a
/// 128×128 tile, for large products on large GPUs. Each step through k costs a round trip to
/// memory that few threads cannot hide, so the small tiles also come with deep steps (BK 32 and
/// 64): a product with a small output and a long k (a layer's forward pass at a small batch)
/// makes few trips. Not 128×128×32/8×8: on an H200 it was slower than 128×128×16 on every
/// product, and after it ran every kernel ran at a third of its speed for seconds.
pub const CANDIDATES: [TileConfig; 13] = [
    shape(32, 32, 16, 4, 4),
    shape(32, 32, 32, 4, 4),
    shape(32, 32, 64, 4, 4),
    shape(32, 64, 32, 4, 4),
    shape(64, 32, 32, 4, 4),
    shape(64, 64, 8, 4, 4),
    shape(64, 64, 16, 4, 4),
    shape(64, 64, 32, 4, 4),
    shape(64, 64, 16, 8, 8),
    shape(128, 64, 8, 8, 4),
    shape(64, 128, 8, 4, 8),
    shape(128, 128, 8, 8, 8),
    shape(128, 128, 16, 8, 8),
];

/// Shapes no GPU has timed yet, kept out of the tuner until one shows them faster: warps of
/// 4×8 threads, 16 outputs a thread one way (fewer workgroup-memory reads per product), and
/// the inner loop unrolled by the host (in case the driver leaves it rolled and the register
/// blocks in memory). `benches/gpu_session.sh` times each, forced with `KILN_MATMUL_TILES`; the
/// tests hold each to the others bit for bit, as every candidate.
pub const EXPERIMENTS: [TileConfig; 12] = [
    shape(128, 128, 8, 8, 8).warp_blocks(),
    shape(128, 128, 16, 8, 8).warp_blocks(),
    shape(64, 64, 16, 4, 4).warp_blocks(),
    shape(128, 128, 8, 8, 16),
    shape(128, 128, 8, 16, 8),
    shape(128, 256, 8, 8, 16),
    shape(256, 128, 8, 16, 8),
    shape(128, 256, 8, 8, 16).warp_blocks(),
    shape(128, 128, 8, 8, 8).unrolled(),
    shape(128, 128, 16, 8, 8).unrolled(),
    shape(64, 64, 16, 4, 4).unrolled(),
    shape(128, 128, 8, 8, 8).warp_blocks().unrolled(),
];

/// The most fmas per k step (BK·TM·TN) a shape with [`TileConfig::unroll`] may write out: the
/// largest of [`EXPERIMENTS`].
pub const MAX_UNROLLED_FMAS: u32 = 1024;

/// The most ways [`TileConfig::split`] may split k.
pub const MAX_SPLIT: u32 = 32;

/// A split's runs of k are multiples of this, and a shape that splits must have a tile depth
/// (BK) that divides it: no k step straddles two runs, and the runs, and with them the values,
/// are the same whatever the tile.
pub const SPLIT_ALIGN: usize = 64;

/// The most floats a split product's partial products may take (64 MiB): a product whose
/// partials would take more splits fewer ways, or not at all.
pub const SPLIT_SCRATCH_MAX: usize = 16 << 20;

/// How split-k divides a product of `dims` under `tile`: (k values each split takes, splits).
/// The run is k / `tile.split` rounded up to a multiple of [`SPLIT_ALIGN`]; the splits are
/// the runs that cover k, fewer where the partials would pass [`SPLIT_SCRATCH_MAX`]. One
/// split is the plain product.
pub fn split_chunks(dims: MatmulDims, tile: TileConfig) -> (usize, usize) {
    let outputs = dims.m.saturating_mul(dims.n).max(1);
    let ways = (tile.split as usize)
        .min(SPLIT_SCRATCH_MAX / outputs)
        .max(1);
    let run = dims
        .k
        .div_ceil(ways)
        .next_multiple_of(SPLIT_ALIGN)
        .max(SPLIT_ALIGN);
    (run, dims.k.div_ceil(run).max(1))
}

/// The shapes split-k is tried with per product, and the ways.
const SPLIT_BASES: [TileConfig; 4] = [
    shape(32, 32, 16, 4, 4),
    shape(64, 64, 16, 4, 4),
    shape(64, 64, 16, 8, 8),
    shape(128, 128, 8, 8, 8),
];
const SPLIT_WAYS: [u32; 4] = [2, 4, 8, 16];

/// What the tuner times for one product of `dims` ([`GpuContext::matmul_tile`]): every
/// [`tuning_variants`] shape, and split-k on a few of them where it splits this product
/// (each distinct number of splits once per shape) and its partial products fit one binding.
///
/// [`GpuContext::matmul_tile`]: crate::GpuContext::matmul_tile
pub fn shape_tuning_variants(limits: &wgpu::Limits, dims: MatmulDims) -> Vec<TileConfig> {
    let mut variants = tuning_variants(limits);
    for base in SPLIT_BASES.iter().filter(|c| c.fits(limits)) {
        let mut splits_seen = Vec::new();
        for ways in SPLIT_WAYS {
            let tile = base.split_k(ways);
            let (_, splits) = split_chunks(dims, tile);
            let partial_bytes = (splits * dims.m * dims.n * 4) as u64;
            if splits > 1
                && !splits_seen.contains(&splits)
                && partial_bytes <= limits.max_storage_buffer_binding_size
            {
                splits_seen.push(splits);
                variants.push(tile);
            }
        }
    }
    variants
}

/// Every variant of every candidate the tuner times on an adapter with `limits`: each shape
/// with vec4 loads and with scalar loads.
pub fn tuning_variants(limits: &wgpu::Limits) -> Vec<TileConfig> {
    CANDIDATES
        .iter()
        .flat_map(|&c| [c, c.scalar()])
        .filter(|c| c.fits(limits))
        .collect()
}

impl TileConfig {
    /// Threads per workgroup.
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Workgroup memory the two tiles take, in bytes.
    pub fn workgroup_bytes(&self) -> u32 {
        (self.bm + self.bn) * self.bk * 4
    }

    /// Whether the adapter can run this shape: threads, workgroup size and workgroup memory
    /// within its limits.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.threads() <= limits.max_compute_invocations_per_workgroup
            && self.bn / self.tn <= limits.max_compute_workgroup_size_x
            && self.bm / self.tm <= limits.max_compute_workgroup_size_y
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }

    /// `Ok` if the kernel can run the shape (the rules [`TileConfig::parse`] checks) and it
    /// [`fits`](Self::fits) the adapter, else an error for `field` saying what is wrong: the
    /// rule broken, or what the shape needs and what `adapter` allows.
    pub fn require_fits(&self, limits: &wgpu::Limits, field: &str, adapter: &str) -> Result<()> {
        self.check()
            .map_err(|why| KilnError::invalid(field, format!("{self}: {why}")))?;
        if self.fits(limits) {
            return Ok(());
        }
        Err(KilnError::invalid(
            field,
            format!(
                "{self} needs {} threads in a {}×{} workgroup and {} bytes of workgroup memory; \
                 the limits of {adapter} allow {} threads, {}×{} and {} bytes",
                self.threads(),
                self.bn / self.tn,
                self.bm / self.tm,
                self.workgroup_bytes(),
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_storage_size
            ),
        ))
    }

    /// The shader's constant lines this shape rewrites.
    pub fn defines(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("BM", self.bm),
            ("BN", self.bn),
            ("BK", self.bk),
            ("TM", self.tm),
            ("TN", self.tn),
            ("WARP", u32::from(self.warp)),
            ("UNROLL", u32::from(self.unroll)),
        ]
    }

    /// The same shape with scalar loads.
    pub fn scalar(self) -> TileConfig {
        TileConfig {
            vec4: false,
            ..self
        }
    }

    /// The same shape with warps holding 4×8 blocks of threads (see [`TileConfig::warp`]).
    pub const fn warp_blocks(self) -> TileConfig {
        TileConfig { warp: true, ..self }
    }

    /// The same shape with its inner loop written out by the host (see [`TileConfig::unroll`]).
    pub const fn unrolled(self) -> TileConfig {
        TileConfig {
            unroll: true,
            ..self
        }
    }

    /// The same shape splitting k up to `split` ways (see [`TileConfig::split`]).
    pub const fn split_k(self, split: u32) -> TileConfig {
        TileConfig { split, ..self }
    }

    /// Parses the form [`Display`](std::fmt::Display) writes: `BMxBNxBK/TMxTN`, then
    /// `/scalar` for scalar loads, `/warp` for warps of 4×8 threads, `/splitS` to split k
    /// up to S ways and `/unroll` for the host-unrolled inner loop.
    pub fn parse(text: &str) -> Result<TileConfig> {
        let bad = |why: &str| {
            KilnError::invalid(
                "matmul tiles",
                format!(
                    "{text:?}: {why} (expected e.g. 128x128x8/8x8, 64x64x16/4x4/scalar, \
                     128x128x8/8x8/warp, 64x64x16/8x8/split4 or 128x128x8/8x8/unroll)"
                ),
            )
        };
        let mut parts = text.trim().split('/');
        let numbers = |part: Option<&str>, count: usize| -> Result<Vec<u32>> {
            let part = part.ok_or_else(|| bad("missing a part"))?;
            let v = part
                .split('x')
                .map(|n| n.trim().parse::<u32>().map_err(|_| bad("not a number")))
                .collect::<Result<Vec<_>>>()?;
            if v.len() != count {
                return Err(bad("wrong number of sizes"));
            }
            Ok(v)
        };
        let tile = numbers(parts.next(), 3)?;
        let thread = numbers(parts.next(), 2)?;
        let (mut vec4, mut warp, mut split, mut unroll) = (true, false, 1, false);
        let mut seen = Vec::new();
        for part in parts {
            let kind = if part.starts_with("split") {
                "split"
            } else {
                part
            };
            if seen.contains(&kind) {
                return Err(bad("a part is given twice"));
            }
            match kind {
                "vec4" => vec4 = true,
                "scalar" => vec4 = false,
                "warp" => warp = true,
                "unroll" => unroll = true,
                "split" => {
                    split = part["split".len()..]
                        .parse::<u32>()
                        .map_err(|_| bad("split takes a number of ways, e.g. split4"))?;
                }
                _ => {
                    return Err(bad(
                        "the parts after the sizes are vec4 or scalar, warp, splitS and unroll",
                    ));
                }
            }
            seen.push(kind);
        }
        if seen.contains(&"vec4") && seen.contains(&"scalar") {
            return Err(bad("vec4 and scalar together"));
        }
        let config = TileConfig {
            bm: tile[0],
            bn: tile[1],
            bk: tile[2],
            tm: thread[0],
            tn: thread[1],
            vec4,
            warp,
            split,
            unroll,
        };
        config.check().map_err(|why| bad(&why))?;
        Ok(config)
    }

    /// The kernel's own constraints: runs of four, tiles that divide evenly among threads.
    fn check(&self) -> std::result::Result<(), String> {
        let TileConfig {
            bm,
            bn,
            bk,
            tm,
            tn,
            warp,
            split,
            unroll,
            ..
        } = *self;
        if !(1..=MAX_SPLIT).contains(&split) {
            return Err(format!("split must be 1 to {MAX_SPLIT} ways"));
        }
        if ![4, 8, 16].contains(&tm) || ![4, 8, 16].contains(&tn) {
            return Err("outputs per thread must be 4, 8 or 16 each way".into());
        }
        if bk == 0 || !bk.is_multiple_of(4) {
            return Err("the k tile must be a positive multiple of 4".into());
        }
        if bm == 0 || bn == 0 || !bm.is_multiple_of(tm) || !bn.is_multiple_of(tn) {
            return Err(
                "tile rows (columns) must be a multiple of rows (columns) per thread".into(),
            );
        }
        if bm > 256 || bn > 256 || bk > 64 {
            return Err("tiles are at most 256×256×64".into());
        }
        if split > 1 && !(SPLIT_ALIGN as u32).is_multiple_of(bk) {
            // A split's runs are multiples of 64: a k step must not straddle two.
            return Err(format!(
                "split needs a k tile that divides {SPLIT_ALIGN} (4, 8, 16, 32 or 64)"
            ));
        }
        if unroll && bk * tm * tn > MAX_UNROLLED_FMAS {
            // The written-out body has a line per k and vec4 of outputs; past this, shader
            // compilers take minutes on it (lavapipe: 16x16x64/16x16 did not finish in 400 s).
            return Err(format!(
                "unroll writes out BK·TM·TN fmas per k step, at most {MAX_UNROLLED_FMAS} \
                 ({bk}·{tm}·{tn} = {})",
                bk * tm * tn
            ));
        }
        if warp && !((bn / tn).is_multiple_of(8) && (bm / tm).is_multiple_of(4)) {
            return Err(
                "warp needs the workgroup's threads in whole 4×8 blocks: columns of threads \
                 (BN/TN) a multiple of 8, rows (BM/TM) of 4"
                    .into(),
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{}/{}x{}{}{}",
            self.bm,
            self.bn,
            self.bk,
            self.tm,
            self.tn,
            if self.vec4 { "" } else { "/scalar" },
            if self.warp { "/warp" } else { "" }
        )?;
        if self.split > 1 {
            write!(f, "/split{}", self.split)?;
        }
        if self.unroll {
            write!(f, "/unroll")?;
        }
        Ok(())
    }
}

/// Products are grouped by the size of their output, since that decides how many workgroups a
/// tile shape makes and so whether big tiles leave cores idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeClass {
    /// Outputs under 8192 elements (timed at 64×64): a handful of workgroups at most.
    Tiny,
    /// Outputs under 256² elements (timed at 128×128).
    Small,
    /// Outputs under 1024² elements (timed at 512×512).
    Medium,
    /// Larger outputs (timed at 2048×2048).
    Large,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 4] = [
        SizeClass::Tiny,
        SizeClass::Small,
        SizeClass::Medium,
        SizeClass::Large,
    ];

    /// The class of an m×n output. The bounds are the geometric midpoints of the timed sizes.
    pub fn of(dims: MatmulDims) -> SizeClass {
        let outputs = dims.m as u64 * dims.n as u64;
        if outputs < 1 << 13 {
            SizeClass::Tiny
        } else if outputs < 1 << 16 {
            SizeClass::Small
        } else if outputs < 1 << 20 {
            SizeClass::Medium
        } else {
            SizeClass::Large
        }
    }

    /// The product the tuner times for this class.
    pub fn timed_dims(self) -> MatmulDims {
        let s = match self {
            SizeClass::Tiny => 64,
            SizeClass::Small => 128,
            SizeClass::Medium => 512,
            SizeClass::Large => 2048,
        };
        MatmulDims { m: s, n: s, k: 512 }
    }

    /// Lower-case name, for reports and the cache file.
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Tiny => "tiny",
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }
}

/// Where a device's tile choice came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TilingSource {
    /// Timed on this device just now.
    Measured,
    /// Read from the cache file (timed by an earlier run).
    Cached,
    /// `KILN_MATMUL_TILES`.
    Environment,
    /// Chosen from the adapter's limits alone (nothing fitted the time budget).
    Limits,
}

/// The tile shape a device uses for each size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatmulTiling {
    /// For [`SizeClass::Tiny`].
    pub tiny: TileConfig,
    /// For [`SizeClass::Small`].
    pub small: TileConfig,
    /// For [`SizeClass::Medium`].
    pub medium: TileConfig,
    /// For [`SizeClass::Large`].
    pub large: TileConfig,
    /// How the shapes were chosen.
    pub source: TilingSource,
}

impl MatmulTiling {
    /// The same shape for every class.
    pub fn uniform(config: TileConfig, source: TilingSource) -> MatmulTiling {
        MatmulTiling {
            tiny: config,
            small: config,
            medium: config,
            large: config,
            source,
        }
    }

    /// The shape for an output of `dims`.
    pub fn pick(&self, dims: MatmulDims) -> TileConfig {
        self.get(SizeClass::of(dims))
    }

    /// The shape for a class.
    pub fn get(&self, class: SizeClass) -> TileConfig {
        match class {
            SizeClass::Tiny => self.tiny,
            SizeClass::Small => self.small,
            SizeClass::Medium => self.medium,
            SizeClass::Large => self.large,
        }
    }

    /// Every class's shape, in [`SizeClass::ALL`]'s order.
    pub fn shapes(&self) -> [TileConfig; 4] {
        SizeClass::ALL.map(|c| self.get(c))
    }

    fn set(&mut self, class: SizeClass, config: TileConfig) {
        match class {
            SizeClass::Tiny => self.tiny = config,
            SizeClass::Small => self.small = config,
            SizeClass::Medium => self.medium = config,
            SizeClass::Large => self.large = config,
        }
    }

    /// Without measuring: per class, the first shape of a preference list that fits the
    /// adapter's limits (bigger tiles for bigger outputs). An error if not even the smallest
    /// candidate fits.
    pub fn from_limits(limits: &wgpu::Limits) -> Result<MatmulTiling> {
        Self::first_fitting(limits).ok_or_else(|| KilnError::OverLimit {
            tensor: "matmul workgroup".into(),
            size: CANDIDATES[0].workgroup_bytes() as u64,
            limit_name: "max_compute_workgroup_storage_size",
            limit: limits.max_compute_workgroup_storage_size as u64,
        })
    }

    fn first_fitting(limits: &wgpu::Limits) -> Option<MatmulTiling> {
        let first_fitting = |order: &[TileConfig]| order.iter().copied().find(|c| c.fits(limits));
        let small = shape(32, 32, 16, 4, 4);
        let medium = shape(64, 64, 16, 4, 4);
        Some(MatmulTiling {
            tiny: first_fitting(&[small])?,
            small: first_fitting(&[small, medium])?,
            medium: first_fitting(&[medium, shape(64, 64, 8, 4, 4), small])?,
            large: first_fitting(&[
                shape(128, 128, 8, 8, 8),
                shape(128, 128, 16, 8, 8),
                shape(128, 64, 8, 8, 4),
                medium,
                shape(64, 64, 8, 4, 4),
                small,
            ])?,
            source: TilingSource::Limits,
        })
    }
}

/// One timing of the tuner.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneRow {
    /// The size class timed.
    pub class: SizeClass,
    /// The product timed.
    pub dims: MatmulDims,
    /// The shape timed.
    pub config: TileConfig,
    /// Median seconds of one product.
    pub median_s: f64,
}

/// A longest time one product may take for its class to be tuned: the tuner runs every
/// candidate several times, and a slow (software) adapter should not spend minutes on it.
/// Classes past the budget take the choice of the largest class timed.
pub const TUNE_BUDGET_S: f64 = 0.05;

/// Times every candidate that fits `limits` on each class's product, through `time`
/// (seconds for one product with one shape), smallest class first, and keeps the fastest.
/// A class whose first timing (of a shape known to run) exceeds [`TUNE_BUDGET_S`] ends the
/// search; a candidate whose timing fails is skipped; only a failing first timing of the
/// smallest class is an error.
pub fn tune(
    limits: &wgpu::Limits,
    mut time: impl FnMut(TileConfig, MatmulDims) -> Result<f64>,
) -> Result<(MatmulTiling, Vec<TuneRow>)> {
    let mut tiling = MatmulTiling::from_limits(limits)?;
    let fitting = tuning_variants(limits);
    let mut rows = Vec::new();
    let mut last_best = None;
    for class in SizeClass::ALL {
        let dims = class.timed_dims();
        // The budget check runs a shape known to work: the last class's choice, or first the
        // limits' choice for the smallest class. It is the one to beat.
        let known = last_best.unwrap_or(tiling.get(class));
        let probe = time(known, dims)?;
        if probe > TUNE_BUDGET_S {
            break;
        }
        let (config, timings) = fastest(&fitting, known, probe, |c| time(c, dims));
        rows.extend(timings.into_iter().map(|(config, median_s)| TuneRow {
            class,
            dims,
            config,
            median_s,
        }));
        tiling.set(class, config);
        last_best = Some(config);
    }
    if let Some(config) = last_best {
        // Classes past the budget: the largest class timed is the best guess.
        let timed: Vec<SizeClass> = rows.iter().map(|r| r.class).collect();
        for class in SizeClass::ALL {
            if !timed.contains(&class) {
                tiling.set(class, config);
            }
        }
        tiling.source = TilingSource::Measured;
    }
    Ok((tiling, rows))
}

/// A longest time one product may take to be tuned on its own shape
/// ([`GpuContext::matmul_tile`](crate::GpuContext::matmul_tile)): every candidate runs several
/// times, so a product slower than this keeps its size class's shape.
pub const SHAPE_TUNE_BUDGET_S: f64 = 0.02;

/// The largest operands (A, B and C together, in bytes) a product is tuned on its own shape
/// with: the tuner allocates its own, and a model near the device's memory should not fail for
/// them.
pub const SHAPE_TUNE_MAX_BYTES: u64 = 256 << 20;

/// One product's shape and layout, as the per-shape choices are keyed (`MxNxK Nt`).
pub fn shape_key(dims: MatmulDims, t: crate::ops::Transpose) -> String {
    format!("{}x{}x{} {t:?}", dims.m, dims.n, dims.k)
}

/// A product's key in the cache file ([`shape_key`]), tuned with split-k on or off: the two
/// kinds of choice are kept apart (`" unsplit"` marks the second).
pub fn cached_shape_key(shape: &str, split_k: bool) -> String {
    if split_k {
        shape.to_string()
    } else {
        format!("{shape}{UNSPLIT}")
    }
}

/// The product a cache file's key names, if it was tuned with split-k as `split_k` says.
pub fn shape_of_cached(key: &str, split_k: bool) -> Option<&str> {
    match key.strip_suffix(UNSPLIT) {
        Some(shape) => (!split_k).then_some(shape),
        None => split_k.then_some(key),
    }
}

const UNSPLIT: &str = " unsplit";

/// Times every shape of `fitting` on one product through `time` (seconds for one product) and
/// returns the fastest with every timing. `known` (the size class's choice, known to run) is
/// timed first: if it takes over [`SHAPE_TUNE_BUDGET_S`] it is kept untimed against the rest.
/// A shape whose timing fails is passed over; only `known` failing is an error.
pub fn tune_shape(
    fitting: &[TileConfig],
    known: TileConfig,
    mut time: impl FnMut(TileConfig) -> Result<f64>,
) -> Result<(TileConfig, Vec<(TileConfig, f64)>)> {
    let probe = time(known)?;
    if probe > SHAPE_TUNE_BUDGET_S {
        return Ok((known, vec![(known, probe)]));
    }
    Ok(fastest(fitting, known, probe, time))
}

/// The fastest of `fitting` by `time`, with every timing, `known`'s first: `known` (timed
/// already, at `probe` seconds) is the one to beat, and a tie keeps the shape timed first. A
/// shape whose timing fails (within the limits, yet refused by a driver: registers, compiler
/// limits) is passed over, not fatal.
fn fastest(
    fitting: &[TileConfig],
    known: TileConfig,
    probe: f64,
    mut time: impl FnMut(TileConfig) -> Result<f64>,
) -> (TileConfig, Vec<(TileConfig, f64)>) {
    let mut rows = vec![(known, probe)];
    let mut best = (known, probe);
    for &config in fitting.iter().filter(|&&c| c != known) {
        match time(config) {
            Ok(t) => {
                rows.push((config, t));
                if t < best.1 {
                    best = (config, t);
                }
            }
            Err(e) => log::warn!("matmul tiles {config} skipped: {e}"),
        }
    }
    (best.0, rows)
}

/// The directory of Kiln's caches: `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`. `None` if none of those is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("KILN_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kiln")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kiln")))
}

/// The cache file's name in [`cache_dir`].
pub const CACHE_FILE: &str = "matmul-tiles.json";

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    /// Adapter key → choice.
    adapters: std::collections::BTreeMap<String, MatmulTiling>,
    /// Adapter key → [`cached_shape_key`] → the shape tuned on that product alone.
    #[serde(default)]
    shapes: std::collections::BTreeMap<String, std::collections::BTreeMap<String, TileConfig>>,
}

/// The cache key of an adapter: what it is and its driver (see [`adapter_identity`]), and the
/// kernel's source and candidates (a new kernel or candidate list is measured again).
pub fn cache_key(adapter: &str, kernel_source: &str) -> String {
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let candidates = CANDIDATES
        .iter()
        .map(|c| c.to_string())
        .chain(
            SPLIT_BASES
                .iter()
                .flat_map(|c| SPLIT_WAYS.map(|w| c.split_k(w).to_string())),
        )
        .collect::<Vec<_>>()
        .join(",");
    for byte in kernel_source.bytes().chain(candidates.bytes()) {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{adapter} | kernel {hash:016x}")
}

/// The cache key of the adapter `info` describes, with this build's matmul kernels.
pub fn adapter_cache_key(info: &wgpu::AdapterInfo) -> String {
    cache_key(&adapter_identity(info), super::kernels::MATMUL.source)
}

/// Name, backend, PCI ids and driver version: a driver update is measured again.
pub fn adapter_identity(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {:?} | {:04x}:{:04x} | {} {}",
        info.name, info.backend, info.vendor, info.device, info.driver, info.driver_info
    )
}

fn read_cache(dir: &std::path::Path) -> CacheFile {
    // A missing or unreadable cache only costs a new measurement.
    std::fs::read(dir.join(CACHE_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The cached choice for `key`, if any.
pub fn load_cached(dir: &std::path::Path, key: &str) -> Option<MatmulTiling> {
    let mut tiling = *read_cache(dir).adapters.get(key)?;
    // An edited or damaged entry is measured again rather than compiled: a shape that breaks
    // the kernel's assumptions would compute wrong products.
    if tiling.shapes().iter().any(|c| c.check().is_err()) {
        log::warn!(
            "{}: ignoring the entry for this adapter, a tile shape is invalid",
            dir.join(CACHE_FILE).display()
        );
        return None;
    }
    tiling.source = TilingSource::Cached;
    Some(tiling)
}

/// Adds (or replaces) `key`'s choice in the cache file, written atomically. The per-product
/// choices of `key` go with the old one: a new measurement of the size classes (`kiln tune`)
/// measures the products again too.
pub fn store_cached(dir: &std::path::Path, key: &str, tiling: &MatmulTiling) -> Result<()> {
    update_cache(dir, |cache| {
        cache.adapters.insert(key.to_string(), *tiling);
        cache.shapes.remove(key);
    })
}

/// Reads the cache file, changes it and writes it back atomically.
fn update_cache(dir: &std::path::Path, change: impl FnOnce(&mut CacheFile)) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| KilnError::file(dir.join(CACHE_FILE), format!("creating its folder: {e}")))?;
    let mut cache = read_cache(dir);
    change(&mut cache);
    let text = serde_json::to_vec_pretty(&cache).expect("plain data serialises");
    crate::weights::write_atomic(&dir.join(CACHE_FILE), &text)
}

/// The per-product choices cached for adapter `key` ([`cached_shape_key`] → shape), the
/// invalid ones left out.
pub fn load_cached_shapes(dir: &std::path::Path, key: &str) -> Vec<(String, TileConfig)> {
    read_cache(dir)
        .shapes
        .remove(key)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, config)| config.check().is_ok())
        .collect()
}

/// Adds (or replaces) one product's choice (`shape`, a [`cached_shape_key`]) for adapter `key`
/// in the cache file, written atomically.
pub fn store_cached_shape(
    dir: &std::path::Path,
    key: &str,
    shape: &str,
    config: TileConfig,
) -> Result<()> {
    update_cache(dir, |cache| {
        cache
            .shapes
            .entry(key.to_string())
            .or_default()
            .insert(shape.to_string(), config);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_is_a_valid_shape_and_round_trips_through_its_name() {
        for c in CANDIDATES
            .iter()
            .chain(&EXPERIMENTS)
            .chain(&SPLIT_BASES)
            .flat_map(|&c| [c, c.scalar()])
            .flat_map(|c| [c, c.split_k(2), c.split_k(MAX_SPLIT)])
        {
            c.check().unwrap();
            assert_eq!(TileConfig::parse(&c.to_string()).unwrap(), c);
        }
        assert_eq!(
            TileConfig::parse("64x64x16/8x8/split4/scalar").unwrap(),
            shape(64, 64, 16, 8, 8).split_k(4).scalar()
        );
        // Cache files written before split-k read as no split, and no split is not written.
        let old: TileConfig = serde_json::from_str(
            r#"{"bm":64,"bn":64,"bk":16,"tm":4,"tn":4,"vec4":true,"warp":false}"#,
        )
        .unwrap();
        assert_eq!(old, shape(64, 64, 16, 4, 4));
        let written = serde_json::to_string(&old).unwrap();
        assert!(
            !written.contains("split") && !written.contains("unroll"),
            "{written}"
        );
    }

    /// A split's runs are multiples of 64 (so of every tile depth) that cover k, as few as
    /// the ways allow, never more than the ways, and fewer where the partial products would
    /// pass their cap.
    #[test]
    fn split_k_runs_cover_k_in_multiples_of_64() {
        let tile = |ways| shape(64, 64, 16, 4, 4).split_k(ways);
        let dims = |m, n, k| MatmulDims { m, n, k };
        for k in [0, 1, 63, 64, 65, 127, 128, 300, 1000, 1024, 4096] {
            for ways in [1, 2, 3, 4, 16, MAX_SPLIT] {
                let (run, splits) = split_chunks(dims(10, 10, k), tile(ways));
                assert!(
                    run.is_multiple_of(SPLIT_ALIGN) && run > 0,
                    "k={k} ways={ways}"
                );
                assert!(splits >= 1 && splits <= ways as usize, "k={k} ways={ways}");
                assert!(
                    run * splits >= k && run * (splits - 1) < k.max(1),
                    "k={k} ways={ways}"
                );
            }
        }
        assert_eq!(split_chunks(dims(10, 10, 1024), tile(4)), (256, 4));
        assert_eq!(split_chunks(dims(10, 10, 300), tile(4)), (128, 3));
        assert_eq!(split_chunks(dims(10, 10, 100), tile(4)), (64, 2));
        assert_eq!(split_chunks(dims(10, 10, 64), tile(16)), (64, 1));
        // 4096² outputs: one split already takes the cap.
        assert_eq!(split_chunks(dims(4096, 4096, 4096), tile(8)).1, 1);
        // 1024²: up to 16 ways fit.
        assert_eq!(split_chunks(dims(1024, 1024, 4096), tile(32)).1, 16);
    }

    /// Choices tuned with split-k off are cached under keys of their own, and each context
    /// reads back only the kind it tunes.
    #[test]
    fn choices_with_and_without_split_k_are_cached_apart() {
        let shape = "256x784x1024 Nn";
        for split_k in [true, false] {
            let key = cached_shape_key(shape, split_k);
            assert_eq!(shape_of_cached(&key, split_k), Some(shape));
            assert_eq!(shape_of_cached(&key, !split_k), None);
        }
        assert_ne!(
            cached_shape_key(shape, true),
            cached_shape_key(shape, false)
        );
    }

    /// The tuner tries split-k on a product only where it splits it, each number of splits
    /// once per shape, and never on the size classes (they are for any k).
    #[test]
    fn split_k_is_tried_per_product_where_it_splits() {
        let limits = wgpu::Limits::default();
        let plain = tuning_variants(&limits);
        assert!(plain.iter().all(|c| c.split == 1));
        let short = shape_tuning_variants(
            &limits,
            MatmulDims {
                m: 10,
                n: 10,
                k: 64,
            },
        );
        assert_eq!(short, plain);
        // Partial products over one binding are not tried.
        let small_binding = wgpu::Limits {
            max_storage_buffer_binding_size: 1000 * 1000 * 4,
            ..wgpu::Limits::default()
        };
        let big = MatmulDims {
            m: 1000,
            n: 1000,
            k: 4096,
        };
        assert_eq!(
            shape_tuning_variants(&small_binding, big),
            tuning_variants(&small_binding)
        );
        let long = shape_tuning_variants(
            &limits,
            MatmulDims {
                m: 10,
                n: 10,
                k: 300,
            },
        );
        let splits: Vec<_> = long.iter().filter(|c| c.split > 1).collect();
        // 300 splits 2 ways (runs of 192) or 3 (128); 8 and 16 ways are 5 runs of 64.
        assert_eq!(splits.len(), 3 * SPLIT_BASES.len(), "{splits:?}");
        let runs: Vec<usize> = splits
            .iter()
            .map(|&&c| {
                split_chunks(
                    MatmulDims {
                        m: 10,
                        n: 10,
                        k: 300,
                    },
                    c,
                )
                .1
            })
            .collect();
        assert_eq!(&runs[..3], &[2, 3, 5]);
    }

    #[test]
    fn the_gpu_session_times_every_candidate_and_experiment() {
        let script = include_str!("../../benches/gpu_session.sh");
        for c in CANDIDATES.iter().chain(&EXPERIMENTS) {
            assert!(
                script.contains(&format!(" {c} ")) || script.contains(&format!(" {c};")),
                "{c}"
            );
        }
    }

    #[test]
    fn bad_tile_names_are_errors_that_say_why() {
        for (text, why) in [
            ("128x128/8x8", "wrong number"),
            ("128x128x8/8x8/fast", "vec4 or scalar"),
            ("128x128x8/6x8", "4, 8 or 16"),
            ("128x128x8/8x8/warp/warp", "twice"),
            ("128x128x8/8x8/vec4/scalar", "together"),
            ("64x16x16/4x4/warp", "whole 4×8 blocks"),
            ("16x64x16/8x4/warp", "whole 4×8 blocks"),
            ("100x128x8/8x8", "multiple"),
            ("128x128x6/8x8", "multiple of 4"),
            ("512x128x8/8x8", "at most"),
            ("axbxc/4x4", "not a number"),
            ("64x64x16/4x4/split", "number of ways"),
            ("64x64x16/4x4/split0", "1 to 32"),
            ("64x64x16/4x4/split33", "1 to 32"),
            ("64x64x16/4x4/split2/split4", "twice"),
            ("64x64x16/4x4/unroll/unroll", "twice"),
            ("64x64x24/4x4/split2", "divides 64"),
            ("64x64x16/16x16/unroll", "at most 1024 (16·16·16 = 4096)"),
        ] {
            let e = TileConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("matmul tiles"), "{text}: {e}");
        }
        // Every experiment is within the unroll cap.
        for c in EXPERIMENTS.iter().filter(|c| c.unroll) {
            assert!(c.check().is_ok(), "{c}");
        }
    }

    #[test]
    fn the_webgpu_minimum_limits_fit_a_choice_for_every_class() {
        let t = MatmulTiling::from_limits(&wgpu::Limits::downlevel_defaults()).unwrap();
        for class in SizeClass::ALL {
            assert!(t.get(class).fits(&wgpu::Limits::downlevel_defaults()));
        }
        // 128×128×16 needs all 16 KiB of workgroup memory and 256 threads: at the minimum it
        // fits exactly, one byte less and it does not.
        let big = shape(128, 128, 16, 8, 8);
        assert!(CANDIDATES.contains(&big));
        let mut limits = wgpu::Limits::defaults();
        assert!(big.fits(&limits));
        limits.max_compute_workgroup_storage_size = big.workgroup_bytes() - 1;
        assert!(!big.fits(&limits));
    }

    #[test]
    fn a_shape_over_the_limits_says_what_it_needs_and_what_there_is() {
        let limits = wgpu::Limits::downlevel_defaults();
        let big = TileConfig::parse("256x256x16/4x4").unwrap();
        let e = big
            .require_fits(&limits, "KILN_MATMUL_TILES", "Some GPU")
            .unwrap_err()
            .to_string();
        for part in [
            "KILN_MATMUL_TILES",
            "256x256x16/4x4",
            "4096 threads",
            "Some GPU",
            "256 threads",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        assert!(
            CANDIDATES[0]
                .require_fits(&limits, "tile", "Some GPU")
                .is_ok()
        );
    }

    #[test]
    fn size_classes_split_at_8192_outputs_and_256_and_1024_squared() {
        let class = |m, n| SizeClass::of(MatmulDims { m, n, k: 7 });
        assert_eq!(class(1, 1), SizeClass::Tiny);
        assert_eq!(class(32, 255), SizeClass::Tiny);
        assert_eq!(class(32, 256), SizeClass::Small);
        assert_eq!(class(255, 256), SizeClass::Small);
        assert_eq!(class(256, 256), SizeClass::Medium);
        assert_eq!(class(256, 1024), SizeClass::Medium);
        assert_eq!(class(1023, 1024), SizeClass::Medium);
        assert_eq!(class(1024, 1024), SizeClass::Large);
        for c in SizeClass::ALL {
            assert_eq!(SizeClass::of(c.timed_dims()), c);
        }
    }

    /// A fake clock: the tuner keeps each class's fastest shape, stops at the budget, and the
    /// classes past it take the last choice.
    #[test]
    fn tuning_keeps_the_fastest_shape_per_class_within_the_budget() {
        let limits = wgpu::Limits::defaults();
        let fastest_small = CANDIDATES[3].scalar();
        let fastest_medium = CANDIDATES[6];
        let (tiling, rows) = tune(&limits, |config, dims| {
            Ok(match SizeClass::of(dims) {
                SizeClass::Tiny => 1e-5,
                SizeClass::Small if config == fastest_small => 1e-4,
                SizeClass::Small => 2e-4,
                SizeClass::Medium if config == fastest_medium => 1e-3,
                SizeClass::Medium => 2e-3,
                SizeClass::Large => 1.0,
            })
        })
        .unwrap();
        // All tie on the tiny class: the first candidate timed stays.
        assert_eq!(tiling.tiny, CANDIDATES[0]);
        assert_eq!(tiling.small, fastest_small);
        assert_eq!(tiling.medium, fastest_medium);
        assert_eq!(tiling.large, fastest_medium);
        assert_eq!(tiling.source, TilingSource::Measured);
        let fitting = CANDIDATES.iter().filter(|c| c.fits(&limits)).count();
        assert_eq!(rows.len(), 3 * 2 * fitting);

        // Nothing within budget: the limits' choice, said so.
        let (tiling, rows) = tune(&limits, |_, _| Ok(1.0)).unwrap();
        assert_eq!(tiling, MatmulTiling::from_limits(&limits).unwrap());
        assert!(rows.is_empty());
    }

    /// A driver that refuses some shapes: they are skipped and the rest still compete.
    #[test]
    fn shapes_that_fail_to_run_are_skipped() {
        let limits = wgpu::Limits::defaults();
        let refused = |c: TileConfig| c.bm == 128;
        let (tiling, rows) = tune(&limits, |config, dims| {
            if refused(config) {
                return Err(KilnError::Gpu("too many registers".into()));
            }
            // Bigger tiles are faster, so without the refusals a 128-row shape would win.
            Ok(dims.m as f64 * 1e-6 / (config.bm * config.bn) as f64)
        })
        .unwrap();
        for class in SizeClass::ALL {
            assert_eq!(tiling.get(class), shape(64, 128, 8, 4, 8), "{class:?}");
        }
        assert!(rows.iter().all(|r| !refused(r.config)));
        let allowed = CANDIDATES
            .iter()
            .filter(|c| c.fits(&limits) && !refused(**c))
            .count();
        assert_eq!(allowed, 10);
        assert_eq!(rows.len(), 4 * 2 * allowed);

        // The first shape failing is an error: nothing is known to run.
        assert!(tune(&limits, |_, _| Err(KilnError::Gpu("lost".into()))).is_err());
    }

    /// A fake clock: one product keeps its fastest shape, a failing shape is passed over, a
    /// product too slow to time keeps the class's shape, and the class's shape failing is an
    /// error.
    #[test]
    fn tuning_one_product_keeps_its_fastest_shape_within_the_budget() {
        let fitting: Vec<TileConfig> = CANDIDATES.iter().flat_map(|&c| [c, c.scalar()]).collect();
        let known = CANDIDATES[4];
        let fastest = CANDIDATES[2];
        let (tile, rows) = tune_shape(&fitting, known, |c| {
            if c == CANDIDATES[0] {
                return Err(KilnError::Gpu("refused".into()));
            }
            Ok(if c == fastest { 1e-4 } else { 2e-4 })
        })
        .unwrap();
        assert_eq!(tile, fastest);
        assert_eq!(rows[0].0, known, "the class's shape is timed first");
        assert_eq!(rows.len(), fitting.len() - 1, "all but the refused one");

        let mut timed = 0;
        let (tile, rows) = tune_shape(&fitting, known, |_| {
            timed += 1;
            Ok(SHAPE_TUNE_BUDGET_S * 2.0)
        })
        .unwrap();
        assert_eq!((tile, rows.len(), timed), (known, 1, 1));

        assert!(tune_shape(&fitting, known, |_| Err(KilnError::Gpu("lost".into()))).is_err());
    }

    /// Per-product choices live beside the adapter's, are dropped when invalid, and are all
    /// forgotten at once.
    #[test]
    fn the_cache_keeps_per_product_choices_until_forgotten() {
        let dir = std::env::temp_dir().join(format!("kiln-shape-tiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let shape = shape_key(
            MatmulDims {
                m: 256,
                n: 1024,
                k: 784,
            },
            crate::ops::Transpose::Nt,
        );
        assert_eq!(shape, "256x1024x784 Nt");
        let cached_shape = |key: &str, shape: &str| {
            load_cached_shapes(&dir, key)
                .into_iter()
                .find(|(s, _)| s == shape)
                .map(|(_, c)| c)
        };
        assert_eq!(cached_shape("a", &shape), None);
        let measured = MatmulTiling::uniform(CANDIDATES[0], TilingSource::Measured);
        store_cached(&dir, "a", &measured).unwrap();
        store_cached_shape(&dir, "a", &shape, CANDIDATES[2]).unwrap();
        store_cached_shape(&dir, "b", &shape, CANDIDATES[3]).unwrap();
        assert_eq!(cached_shape("a", &shape), Some(CANDIDATES[2]));
        assert_eq!(cached_shape("b", &shape), Some(CANDIDATES[3]));
        assert_eq!(cached_shape("a", "1x1x1 Nn"), None);
        // An invalid shape in the file is not used.
        let bad = TileConfig {
            tm: 3,
            ..CANDIDATES[0]
        };
        store_cached_shape(&dir, "a", "1x1x1 Nn", bad).unwrap();
        assert_eq!(cached_shape("a", "1x1x1 Nn"), None);
        // A new measurement of the classes forgets the products' choices, for that adapter.
        store_cached(&dir, "a", &measured).unwrap();
        assert_eq!(cached_shape("a", &shape), None);
        assert_eq!(cached_shape("b", &shape), Some(CANDIDATES[3]));
        assert!(load_cached(&dir, "a").is_some(), "the class choice stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_keeps_one_choice_per_adapter_and_survives_garbage() {
        let dir = std::env::temp_dir().join(format!("kiln-tiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = MatmulTiling::uniform(CANDIDATES[1], TilingSource::Measured);
        let b = MatmulTiling::uniform(CANDIDATES[6].scalar(), TilingSource::Measured);
        assert_eq!(load_cached(&dir, "a"), None);
        store_cached(&dir, "a", &a).unwrap();
        store_cached(&dir, "b", &b).unwrap();
        let cached = |t: MatmulTiling| MatmulTiling {
            source: TilingSource::Cached,
            ..t
        };
        assert_eq!(load_cached(&dir, "a"), Some(cached(a)));
        assert_eq!(load_cached(&dir, "b"), Some(cached(b)));
        std::fs::write(dir.join(CACHE_FILE), b"{ not json").unwrap();
        assert_eq!(load_cached(&dir, "a"), None);
        store_cached(&dir, "a", &a).unwrap();
        assert_eq!(load_cached(&dir, "a"), Some(cached(a)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_key_changes_with_the_kernel_and_the_adapter() {
        let key = cache_key("GPU | Vulkan | 10de:2330 | NVIDIA 550.54", "kernel");
        assert_ne!(
            key,
            cache_key("GPU | Vulkan | 10de:2330 | NVIDIA 550.54", "kernel 2")
        );
        assert_ne!(
            key,
            cache_key("GPU | Vulkan | 10de:2330 | NVIDIA 560.1", "kernel")
        );
        assert_eq!(
            key,
            cache_key("GPU | Vulkan | 10de:2330 | NVIDIA 550.54", "kernel")
        );
    }
}
