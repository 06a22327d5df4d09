//! The GPU device: adapter, wgpu device and queue, limit-checked buffers, cached pipelines,
//! and errors turned into `Err` instead of panics.

pub mod adapter;
pub mod arena;
pub mod kernels;
pub mod matmul_tiles;
mod ops;
pub mod upload;
pub use ops::{Timestamps, encode_pass};

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{KilnError, Result};
use crate::ops::{MatmulDims, Transpose};
pub use adapter::AdapterOptions;
use kernels::{Binding, Kernel};
use matmul_tiles::{MatmulTiling, SizeClass, TileConfig, TilingSource, TuneRow};

/// A pipeline with the layout of its bind group.
pub struct CachedPipeline {
    /// The compiled pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The layout of its bind group.
    pub layout: wgpu::BindGroupLayout,
    /// The bind group index it uses.
    pub group: u32,
}

type ModuleKey = (&'static str, Vec<(&'static str, u32)>);

/// Bytes of one piece of a large [`GpuContext::write`]: 256 MiB.
pub const WRITE_PIECE: usize = 256 << 20;

/// The tile cache file a tuning wrote (`None`: nothing was measured, so nothing to cache), or
/// why it wrote none.
pub type CacheWrite = std::result::Result<Option<std::path::PathBuf>, String>;
type PipelineKey = (ModuleKey, &'static str, Vec<(&'static str, u64)>);

/// One wgpu device and everything Kiln keeps per device.
pub struct GpuContext {
    /// The wgpu device (exposed for code that adds its own passes).
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    /// Device-local memory in bytes, where the backend says.
    memory: Option<u64>,
    /// Whether `AdapterOptions` capped the buffer limits below the adapter's.
    capped: bool,
    separate_activations: bool,
    modules: Mutex<HashMap<ModuleKey, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
    /// Errors wgpu reported outside any call that could return them (validation, out of
    /// memory, device loss); the next Kiln call on this device returns them.
    errors: Arc<Mutex<Vec<String>>>,
    /// A small read-only buffer bound where a kernel's optional input is absent.
    dummy: wgpu::Buffer,
    bounds_checks: bool,
    /// The matmul tile shapes, chosen on first use (`matmul_tiling`); the lock also keeps two
    /// threads from tuning at once.
    tiling: Mutex<Option<MatmulTiling>>,
    /// Whether each product's shape is tuned on its own (`matmul_tile`).
    tune_shapes: bool,
    /// [`AdapterOptions::matmul_tiles`], not yet parsed.
    forced_tiles: Option<String>,
    /// Whether the per-product tuner may split k ([`AdapterOptions::split_k`]).
    split_k: bool,
    /// This adapter's, driver's and kernel's key in the tile cache.
    tiling_key: String,
    /// The shapes tuned per product so far ([`matmul_tiles::shape_key`] → shape).
    shape_tiles: Mutex<HashMap<String, TileConfig>>,
    /// Whether large host batches are checked and copied on several threads.
    write_threads: upload::WriteThreads,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .finish()
    }
}

impl GpuContext {
    /// Opens the adapter `opts` asks for, with all of its limits (wgpu's defaults would cap
    /// buffers at 256 MiB) and the optional features Kiln can use.
    pub fn new(opts: &AdapterOptions) -> Result<Self> {
        let adapter = adapter::select(opts)?;
        Self::from_adapter(adapter, opts)
    }

    /// Opens a device on a chosen adapter, with `opts`' bounds checks and limit caps.
    pub fn from_adapter(adapter: wgpu::Adapter, opts: &AdapterOptions) -> Result<Self> {
        let info = adapter.get_info();
        let bounds_checks = opts.bounds_checks;
        let capped = opts.max_buffer_size.is_some() || opts.max_storage_binding.is_some();
        let memory = match (adapter::device_memory(&adapter), opts.max_device_memory) {
            (Some(m), Some(cap)) => Some(m.min(cap)),
            (m, cap) => m.or(cap),
        };
        let mut limits = adapter.limits();
        // Below a few KiB not even Kiln's small fixed buffers (placeholders, uniform blocks,
        // the loss history) fit.
        const SMALLEST_CAP: u64 = 4 << 10;
        for (field, cap) in [
            ("max_buffer_size", opts.max_buffer_size),
            ("max_storage_binding", opts.max_storage_binding),
        ] {
            if let Some(cap) = cap.filter(|&c| c < SMALLEST_CAP) {
                return Err(KilnError::invalid(
                    field,
                    format!("a cap of {cap} bytes is below the {SMALLEST_CAP} bytes Kiln needs"),
                ));
            }
        }
        if let Some(cap) = opts.max_buffer_size {
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
        }
        if let Some(cap) = opts.max_storage_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        // Every size Kiln writes into a uniform is a u32 and every loop counter too (see the
        // termination argument in `pipeline`): bindings stay under 2^31 bytes. Vulkan, DX12
        // and GL adapters report less already; Metal reports its whole buffer size.
        limits.max_storage_buffer_binding_size =
            limits.max_storage_buffer_binding_size.min((1 << 31) - 4);
        let wanted =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| KilnError::Gpu(format!("could not open {}: {e}", info.name)))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            sink.lock()
                .unwrap()
                .push(format!("device lost ({reason:?}): {message}"));
        });
        let dummy = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("kiln.dummy"),
            contents: &[0u8; 16],
            usage: wgpu::BufferUsages::STORAGE,
        });
        let tune_shapes = opts
            .tune_shapes
            .unwrap_or(info.device_type != wgpu::DeviceType::Cpu);
        let tiling_key = matmul_tiles::adapter_cache_key(&info);
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            memory,
            capped,
            separate_activations: opts.separate_activations,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            errors,
            dummy,
            bounds_checks,
            tiling: Mutex::new(None),
            tune_shapes,
            forced_tiles: opts.matmul_tiles.clone(),
            split_k: opts.split_k.unwrap_or(true),
            tiling_key,
            shape_tiles: Mutex::default(),
            write_threads: upload::WriteThreads::default(),
        })
    }

    /// The adapter's name, backend, type and driver.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The device-local memory in bytes that Kiln budgets for (a Vulkan adapter's largest
    /// device-local heap, or `AdapterOptions::max_device_memory`); `None` where unknown.
    pub fn device_memory(&self) -> Option<u64> {
        self.memory
    }

    /// The optional features enabled (timestamps, subgroups, f16 where the adapter has them).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// The most loop iterations one shader invocation may run in all ([`adapter::loop_limit`]).
    pub fn loop_limit(&self) -> Option<u64> {
        adapter::loop_limit(&self.info)
    }

    /// Errs, naming the kernel, if one whose threads run up to `iterations` loop iterations
    /// (`kernels::matmul_loops` & co.) would be cut short by [`GpuContext::loop_limit`].
    pub(crate) fn check_loops(&self, (what, iterations): kernels::Loops) -> Result<()> {
        match self.loop_limit() {
            Some(limit) if iterations > limit => Err(KilnError::invalid(
                &what,
                format!(
                    "a thread of its kernel runs up to {iterations} loop iterations, and {} \
                     ends a thread's loops after {limit}: its results would be wrong. Use a \
                     hardware GPU or --device cpu, or smaller sizes",
                    self.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether training steps fold each elementwise activation into the product before it
    /// (see [`AdapterOptions::separate_activations`]).
    pub fn fuses_activations(&self) -> bool {
        !self.separate_activations
    }

    /// Whether kernels are compiled with wgpu's runtime bounds checks.
    pub fn bounds_checks(&self) -> bool {
        self.bounds_checks
    }

    /// "name (backend)", for messages and benchmark rows.
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Returns (and clears) any error wgpu reported since the last check.
    pub fn check_errors(&self) -> Result<()> {
        let mut errors = self.errors.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(KilnError::Gpu(message))
    }

    /// Errs if a buffer of `size` bytes for `tensor` would exceed the device's limits.
    pub fn check_size(&self, tensor: &str, size: u64, storage: bool) -> Result<()> {
        let over = |limit_name, limit| KilnError::OverLimit {
            tensor: tensor.to_string(),
            size,
            limit_name,
            limit,
        };
        if size > self.limits.max_buffer_size {
            return Err(over("max_buffer_size", self.limits.max_buffer_size));
        }
        let binding = self.limits.max_storage_buffer_binding_size;
        if storage && size > binding {
            return Err(over("max_storage_buffer_binding_size", binding));
        }
        Ok(())
    }

    /// A zeroed storage buffer of `len` f32s, checked against the limits.
    pub fn storage_buffer(&self, tensor: &str, len: usize) -> Result<wgpu::Buffer> {
        self.checked_buffer(tensor, len, true)
    }

    /// A zeroed storage buffer of `len` f32s that is bound only in ranges (an arena part,
    /// see [`arena`]): checked against `max_buffer_size`, not the binding limit.
    pub fn arena_buffer(&self, tensor: &str, len: usize) -> Result<wgpu::Buffer> {
        self.checked_buffer(tensor, len, false)
    }

    fn checked_buffer(&self, tensor: &str, len: usize, bound_whole: bool) -> Result<wgpu::Buffer> {
        let size = (len.max(1) as u64).saturating_mul(4);
        self.check_size(tensor, size, bound_whole)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(tensor),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data`, checked against the limits.
    pub fn upload<T: bytemuck::Pod>(&self, tensor: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.storage_buffer(tensor, bytes.len().div_ceil(4))?;
        self.write(&buffer, bytes)?;
        Ok(buffer)
    }

    /// Writes `data` at the start of `buffer`, from the next submission on. wgpu stages a
    /// write whole and keeps the staging memory until a submission after it completes, so a
    /// write larger than [`WRITE_PIECE`] bytes goes in pieces, each pushed through and waited
    /// for before the next: a multi-GiB upload never holds more than one piece of staging
    /// memory beside the data.
    pub fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.in_pieces(bytes.len(), 1, |range| {
            let at = range.start as u64;
            self.queue.write_buffer(buffer, at, &bytes[range]);
            Ok(())
        })
    }

    /// [`GpuContext::write`] of f32s that checks each is finite as it copies it into the staging
    /// memory: one pass over the data, not a check and then a copy (the host's memory speed is
    /// what a batch from the host costs). A batch large enough to share out goes on one thread
    /// or on several, whichever this host did faster over the first such writes (see
    /// [`upload`]). A value that is not finite is an error naming `what` and the first such
    /// index; values around it may already be on their way to `buffer`.
    pub fn write_finite(&self, buffer: &wgpu::Buffer, data: &[f32], what: &str) -> Result<()> {
        let parallel = upload::parallel_threads(data.len());
        if parallel <= 1 {
            return self.write_finite_on(buffer, data, what, 1);
        }
        match self.write_threads.pick(data.len()) {
            upload::Pick::Chosen(shared) => {
                self.write_finite_on(buffer, data, what, if shared { parallel } else { 1 })
            }
            upload::Pick::Measure(shared) => {
                let start = std::time::Instant::now();
                let threads = if shared { parallel } else { 1 };
                self.write_finite_on(buffer, data, what, threads)?;
                self.write_threads.record(
                    data.len(),
                    shared,
                    start.elapsed().as_secs_f64(),
                    parallel,
                );
                Ok(())
            }
        }
    }

    /// [`GpuContext::write_finite`] on `threads` threads of rayon's pool (1: the calling
    /// thread alone), each checking and copying its own share of whole runs: how the choice is
    /// measured, and how `examples/upload_paths.rs` compares thread counts.
    pub fn write_finite_on(
        &self,
        buffer: &wgpu::Buffer,
        data: &[f32],
        what: &str,
        threads: usize,
    ) -> Result<()> {
        self.in_pieces(data.len(), 4, |range| {
            let at = range.start;
            let piece = &data[range];
            let size = std::num::NonZeroU64::new((piece.len() * 4) as u64)
                .expect("pieces are never empty");
            let mut view = self
                .queue
                .write_buffer_with(buffer, (at * 4) as u64, size)
                .ok_or_else(|| KilnError::Gpu(format!("writing {what} to the GPU failed")))?;
            upload::check_and_copy_on(piece, view.slice(..), at, what, threads)
        })
    }

    /// `len` copies of `value` at the start of `buffer`, written as [`GpuContext::write`]
    /// writes, from one piece of the fill on the host.
    pub fn fill(&self, buffer: &wgpu::Buffer, len: usize, value: f32) -> Result<()> {
        let piece = vec![value; len.min(WRITE_PIECE / 4)];
        self.in_pieces(len, 4, |range| {
            let at = (range.start * 4) as u64;
            let n = range.len();
            self.queue
                .write_buffer(buffer, at, bytemuck::cast_slice(&piece[..n]));
            Ok(())
        })
    }

    /// Calls `write` with the element ranges of `len` elements of `size` bytes, each range at
    /// most [`WRITE_PIECE`] bytes, pushing the writes of each through (and waiting for them)
    /// before the next: the one place that bounds the staging memory of a large write.
    fn in_pieces(
        &self,
        len: usize,
        size: usize,
        mut write: impl FnMut(std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let per_piece = WRITE_PIECE / size;
        for (i, at) in (0..len).step_by(per_piece).enumerate() {
            if i > 0 {
                self.push_writes()?;
            }
            write(at..(at + per_piece).min(len))?;
        }
        Ok(())
    }

    /// Submits the writes staged so far and waits for them, freeing their staging memory.
    fn push_writes(&self) -> Result<()> {
        self.queue.submit(std::iter::empty::<wgpu::CommandBuffer>());
        self.wait_idle()
    }

    /// A uniform buffer holding `bytes`, rewritable with `queue.write_buffer`.
    pub fn uniform_bytes(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// The read-only placeholder bound where an optional input is absent.
    pub fn dummy(&self) -> &wgpu::Buffer {
        &self.dummy
    }

    /// The matmul tile shape for each output size on this device. Chosen on the first call:
    /// [`AdapterOptions::matmul_tiles`] (`KILN_MATMUL_TILES`) if set, else the choice cached
    /// for this adapter and driver in [`matmul_tiles::cache_dir`], else measured now (well
    /// under a second on a GPU) and cached. See [`matmul_tiles`].
    pub fn matmul_tiling(&self) -> Result<MatmulTiling> {
        let mut tiling = self.tiling.lock().unwrap();
        if let Some(t) = *tiling {
            return Ok(t);
        }
        // Capped limits make a device that exists only in this process: neither measured (the
        // tuning operands may not fit) nor cached under the adapter's name.
        if self.capped {
            let limits_only = MatmulTiling::from_limits(&self.limits)?;
            *tiling = Some(limits_only);
            return Ok(limits_only);
        }
        let chosen = match &self.forced_tiles {
            Some(text) if !text.trim().is_empty() => {
                let config = TileConfig::parse(text)
                    .map_err(|e| KilnError::invalid("KILN_MATMUL_TILES", e.to_string()))?;
                config.require_fits(&self.limits, "KILN_MATMUL_TILES", &self.info.name)?;
                MatmulTiling::uniform(config, TilingSource::Environment)
            }
            _ => {
                let dir = matmul_tiles::cache_dir();
                match dir
                    .as_ref()
                    .and_then(|dir| matmul_tiles::load_cached(dir, &self.tiling_key))
                    .filter(|t| t.shapes().iter().all(|c| c.fits(&self.limits)))
                {
                    Some(cached) => {
                        // The products tuned by earlier runs, read with the classes' choice
                        // where `matmul_tile` uses them.
                        // Only those tuned with split-k as this context has it.
                        let products = dir
                            .as_ref()
                            .filter(|_| self.tune_shapes)
                            .map(|dir| matmul_tiles::load_cached_shapes(dir, &self.tiling_key))
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|(key, c)| {
                                let shape = matmul_tiles::shape_of_cached(&key, self.split_k)?;
                                c.fits(&self.limits).then(|| (shape.to_string(), c))
                            });
                        self.shape_tiles.lock().unwrap().extend(products);
                        cached
                    }
                    None => {
                        let (chosen, _, cached) = self.tune_matmul()?;
                        // Costs only a measurement next time: a warning.
                        if let Err(why) = cached {
                            log::warn!("matmul tiles not cached: {why}");
                        }
                        chosen
                    }
                }
            }
        };
        *tiling = Some(chosen);
        Ok(chosen)
    }

    /// Measures every tile shape again (ignoring the cache and a forced shape), uses the
    /// result from now on and caches it. Returns the choice, every timing, and the cache file
    /// written (or why none was). Choices made for single products are forgotten too: they are
    /// measured again when next used.
    pub fn retune_matmul(&self) -> Result<(MatmulTiling, Vec<TuneRow>, CacheWrite)> {
        let mut tiling = self.tiling.lock().unwrap();
        let (chosen, rows, cached) = self.tune_matmul()?;
        *tiling = Some(chosen);
        // The cache forgot them with the new measurement (`store_cached`).
        self.shape_tiles.lock().unwrap().clear();
        Ok((chosen, rows, cached))
    }

    /// The tile shape for one product, `op(A)·op(B)` of `dims` in layout `t`. On a GPU (not a
    /// software adapter, unless `AdapterOptions::tune_shapes` says otherwise) each product's
    /// shape and layout is timed with every candidate the first time it is asked for, and the
    /// choice is cached beside the size classes': a size class is one product timed at k =
    /// 512, and the best shape also depends on k, on the layout and on how many workgroups the
    /// output makes. Otherwise, and where `KILN_MATMUL_TILES` forces a shape, the product is too
    /// slow to time often ([`matmul_tiles::SHAPE_TUNE_BUDGET_S`]) or its operands too large
    /// ([`matmul_tiles::SHAPE_TUNE_MAX_BYTES`]): the size class's shape. Every shape gives the
    /// same values, so this changes speed only, except where the product's choice splits k
    /// ([`matmul_tiles::shape_tuning_variants`]): that rounds differently, by a few ulps.
    pub fn matmul_tile(&self, dims: MatmulDims, t: Transpose) -> Result<TileConfig> {
        let tiling = self.matmul_tiling()?;
        let class_choice = tiling.pick(dims);
        let (m, n, k) = (dims.m as u64, dims.n as u64, dims.k as u64);
        let operand_bytes = (m.saturating_mul(k))
            .saturating_add(k.saturating_mul(n))
            .saturating_add(m.saturating_mul(n))
            .saturating_mul(4);
        let tunable = self.tune_shapes
            && matches!(tiling.source, TilingSource::Measured | TilingSource::Cached)
            && operand_bytes <= matmul_tiles::SHAPE_TUNE_MAX_BYTES
            && m.min(n).min(k) > 0;
        if !tunable {
            return Ok(class_choice);
        }
        let shape = matmul_tiles::shape_key(dims, t);
        // Held while tuning: two threads asking for one shape measure it once. Holds the
        // choices cached by earlier runs too (read with the classes' by `matmul_tiling`).
        let mut shapes = self.shape_tiles.lock().unwrap();
        if let Some(&tile) = shapes.get(&shape) {
            return Ok(tile);
        }
        let tile = match self.tune_product(dims, t, class_choice) {
            Ok(tile) => {
                log::info!("{}: matmul {shape} tiles {tile}", self.info.name);
                let cached = matmul_tiles::cached_shape_key(&shape, self.split_k);
                if let Some(dir) = matmul_tiles::cache_dir()
                    && let Err(e) =
                        matmul_tiles::store_cached_shape(&dir, &self.tiling_key, &cached, tile)
                {
                    log::warn!("matmul tiles for {shape} not cached: {e}");
                }
                tile
            }
            // Tuning is for speed only: a product it could not time keeps its class's shape,
            // this time, rather than failing the caller.
            Err(e) => {
                log::warn!("matmul {shape}: not tuned ({e}); using {class_choice}");
                class_choice
            }
        };
        shapes.insert(shape, tile);
        Ok(tile)
    }

    /// The products whose tile shape was chosen on their own so far ([`Self::matmul_tile`]),
    /// by [`matmul_tiles::shape_key`], sorted.
    pub fn product_tiles(&self) -> Vec<(String, TileConfig)> {
        let mut tiles: Vec<_> = self
            .shape_tiles
            .lock()
            .unwrap()
            .iter()
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        tiles.sort_by(|a, b| a.0.cmp(&b.0));
        tiles
    }

    /// Times every tile shape on one product of `dims` in layout `t` and returns the fastest
    /// (`known`, the class's shape, first: see [`matmul_tiles::tune_shape`]).
    fn tune_product(
        &self,
        dims: MatmulDims,
        t: Transpose,
        known: TileConfig,
    ) -> Result<TileConfig> {
        let operands = self.tuning_operands(dims)?;
        let fitting = if self.split_k {
            matmul_tiles::shape_tuning_variants(&self.limits, dims)
        } else {
            matmul_tiles::tuning_variants(&self.limits)
        };
        self.compile_matmuls(&fitting, dims, t)?;
        let (tile, _) = matmul_tiles::tune_shape(&fitting, known, |tile| {
            self.time_matmul(&operands, tile, dims, t)
        })?;
        Ok(tile)
    }

    /// Compiles the pipeline of every tile shape in `tiles` for products of `dims` in layout
    /// `t`, before any of them is timed: the timings then run back to back, not each after a
    /// compilation during which the GPU idles (and may lower its clocks).
    fn compile_matmuls(&self, tiles: &[TileConfig], dims: MatmulDims, t: Transpose) -> Result<()> {
        for &tile in tiles {
            for launch in kernels::matmul(t, dims, dims, false, tile, self.max_dim())? {
                self.pipeline(launch.kernel, &launch.constants, &launch.defines);
            }
        }
        Ok(())
    }

    /// A, B, C and an unused output for timing products of `dims`.
    fn tuning_operands(&self, dims: MatmulDims) -> Result<[wgpu::Buffer; 4]> {
        let ramp = |len: usize| (0..len).map(|i| (i % 7) as f32 * 0.125).collect::<Vec<_>>();
        Ok([
            self.upload("tuning a", &ramp(dims.m * dims.k))?,
            self.upload("tuning b", &ramp(dims.k * dims.n))?,
            self.storage_buffer("tuning c", dims.m * dims.n)?,
            self.storage_buffer("unused output", 1)?,
        ])
    }

    /// Median seconds of one product of `dims` in layout `t` with `tile`, on `operands`.
    fn time_matmul(
        &self,
        operands: &[wgpu::Buffer; 4],
        tile: TileConfig,
        dims: MatmulDims,
        t: Transpose,
    ) -> Result<f64> {
        let [a, b, c, unused] = operands;
        let launches = kernels::matmul(t, dims, dims, false, tile, self.max_dim())?;
        let recorded = self.record_matmul(
            &launches,
            dims,
            tile,
            a.into(),
            b.into(),
            None,
            c.into(),
            unused.into(),
        )?;
        let dispatches: Vec<_> = recorded.iter().map(|r| &r.dispatch).collect();
        Ok(self.time_dispatch(&dispatches, 1, 3)?.0)
    }

    /// Times the candidates ([`matmul_tiles::tune`]) and caches the choice: returns it, the
    /// timings, and the cache file written or why none was.
    fn tune_matmul(&self) -> Result<(MatmulTiling, Vec<TuneRow>, CacheWrite)> {
        let mut operands: HashMap<(usize, usize, usize), [wgpu::Buffer; 4]> = HashMap::new();
        // Every size class's product is a multiple of 4 each way: one pipeline per shape.
        self.compile_matmuls(
            &matmul_tiles::tuning_variants(&self.limits),
            SizeClass::Tiny.timed_dims(),
            Transpose::Nn,
        )?;
        let (chosen, rows) = matmul_tiles::tune(&self.limits, |tile, dims| {
            let buffers = match operands.entry((dims.m, dims.n, dims.k)) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(self.tuning_operands(dims)?)
                }
            };
            self.time_matmul(buffers, tile, dims, Transpose::Nn)
        })?;
        let cached = if chosen.source == TilingSource::Measured {
            log::info!("{}: matmul tiles {:?}", self.info.name, chosen);
            match matmul_tiles::cache_dir() {
                Some(dir) => matmul_tiles::store_cached(&dir, &self.tiling_key, &chosen)
                    .map(|()| Some(dir.join(matmul_tiles::CACHE_FILE)))
                    .map_err(|e| e.to_string()),
                None => Err("no HOME, XDG_CACHE_HOME or KILN_CACHE_DIR".to_string()),
            }
        } else {
            Ok(None)
        };
        Ok((chosen, rows, cached))
    }

    /// Blocks until the GPU has finished everything submitted so far.
    pub fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| KilnError::Gpu(format!("waiting for the GPU: {e}")))
    }

    /// Copies `len` f32s starting at element `offset` of `buffer` back to the host. This waits
    /// for the GPU: call it when a result is wanted, never inside a step loop.
    pub fn read_back(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = (len * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln.staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, (offset * 4) as u64, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let receiver = map_read(&slice);
        self.wait_idle()?;
        self.check_errors()?;
        wait_mapped(receiver, "mapping a read-back buffer")?;
        let data = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| KilnError::Gpu(format!("reading a mapped buffer: {e}")))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// The pipeline for `kernel` with these override constants and source defines (see
    /// [`kernels::Launch::defines`]), compiled on first use.
    pub fn pipeline(
        &self,
        kernel: &'static Kernel,
        constants: &[(&'static str, f64)],
        defines: &[(&'static str, u32)],
    ) -> Arc<CachedPipeline> {
        let module_key: ModuleKey = (kernel.file, defines.to_vec());
        let key: PipelineKey = (
            module_key.clone(),
            kernel.entry,
            constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        );
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return p.clone();
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(module_key)
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.file),
                        source: wgpu::ShaderSource::Wgsl(kernels::with_defines(
                            kernel.source,
                            defines,
                        )),
                    };
                    if self.bounds_checks {
                        self.device.create_shader_module(desc)
                    } else {
                        let checks = wgpu::ShaderRuntimeChecks {
                            bounds_checks: false,
                            force_loop_bounding: false,
                            ..wgpu::ShaderRuntimeChecks::checked()
                        };
                        // SAFETY: only Kiln's own kernels (shaders/) come here, and for them:
                        // - Bounds: every kernel compares each index with the lengths in its
                        //   own uniform block before touching memory, and the host sizes every
                        //   binding to those lengths (tests cover shapes that are not tile
                        //   multiples).
                        // - Loops terminate: every loop counter starts below its bound and
                        //   either grows by a positive constant or by a uniform step ≥ 1
                        //   (grid strides, tile depths), or halves to 0 (tree reductions);
                        //   every bound is a constant (tile shapes, 4, 256) or a uniform field
                        //   the host writes from the size of a bound buffer. Those sizes are
                        //   checked against `max_storage_buffer_binding_size` (under 2^31
                        //   bytes, so under 2^29 f32s) and steps are at most 2^16, so no
                        //   counter can wrap past 2^32 and start over. naga's injected loop
                        //   counters cost the register-blocked matmul 10–20× on an H200
                        //   (../shared/gpu-runs/2026-11-26-h200/guards-exp.txt): the driver
                        //   stops unrolling and the register blocks spill.
                        // Integer division guards stay on: measured free.
                        unsafe { self.device.create_shader_module_trusted(desc, checks) }
                    }
                })
                .clone()
        };
        let entries: Vec<_> = kernel
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::Read | Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *b == Binding::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.entry),
                entries: &entries,
            });
        let groups: Vec<Option<&wgpu::BindGroupLayout>> = (0..=kernel.group)
            .map(|g| (g == kernel.group).then_some(&layout))
            .collect();
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.entry),
                bind_group_layouts: &groups,
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            });
        let cached = Arc::new(CachedPipeline {
            pipeline,
            layout,
            group: kernel.group,
        });
        self.pipelines.lock().unwrap().insert(key, cached.clone());
        cached
    }

    /// A bind group for `pipeline`, one buffer range per binding in order.
    pub fn bind_group(
        &self,
        pipeline: &CachedPipeline,
        buffers: &[BufferRange<'_>],
    ) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: r.buffer,
                    offset: r.offset,
                    size: r.size,
                }),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.layout,
            entries: &entries,
        })
    }
}

/// Where a `map_async` callback sends its result.
pub(crate) type MapReceiver =
    futures_intrusive::channel::shared::OneshotReceiver<Result<(), wgpu::BufferAsyncError>>;

/// Starts mapping `slice` for reading. Whichever thread next polls the device runs the
/// callback, so the result comes through the returned receiver (see [`wait_mapped`]) rather
/// than being assumed after one's own poll.
pub(crate) fn map_read(slice: &wgpu::BufferSlice<'_>) -> MapReceiver {
    let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    receiver
}

/// Waits for a mapping [`map_read`] started (the device must be polled past its submission);
/// `what` names the read in the error if the mapping failed or was dropped.
pub(crate) fn wait_mapped(receiver: MapReceiver, what: &str) -> Result<()> {
    match pollster::block_on(receiver.receive()) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(KilnError::Gpu(format!("{what}: {e}"))),
        None => Err(KilnError::Gpu(format!(
            "{what} was cancelled (device lost?)"
        ))),
    }
}

/// A buffer, or a byte range of one, to bind.
#[derive(Clone, Copy)]
pub struct BufferRange<'a> {
    /// The buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the range.
    pub offset: u64,
    /// Byte length (`None`: to the end).
    pub size: Option<NonZeroU64>,
}

impl<'a> From<&'a wgpu::Buffer> for BufferRange<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        BufferRange {
            buffer,
            offset: 0,
            size: None,
        }
    }
}

impl<'a> BufferRange<'a> {
    /// Elements `[offset, offset + len)` of an f32 buffer.
    pub fn f32s(buffer: &'a wgpu::Buffer, offset: usize, len: usize) -> Self {
        BufferRange {
            buffer,
            offset: (offset * 4) as u64,
            size: NonZeroU64::new((len.max(1) * 4) as u64),
        }
    }
}

/// One recorded kernel launch: pipeline, bind group and workgroup grid.
pub struct Dispatch {
    /// The pipeline to run.
    pub pipeline: Arc<CachedPipeline>,
    /// Its buffers.
    pub bind_group: wgpu::BindGroup,
    /// Workgroups in x, y, z.
    pub grid: [u32; 3],
}

/// A dispatch with the buffer of its uniform block, which can be rewritten (when a batch size
/// or a learning rate changes) without rebuilding the bind group.
pub struct Recorded {
    /// The recorded launch.
    pub dispatch: Dispatch,
    /// Its uniform block, rewritable with `queue.write_buffer`.
    pub uniform: wgpu::Buffer,
}

impl Recorded {
    /// Points the recorded dispatch at `launch`'s uniforms and grid (same kernel, same
    /// bindings), from the next submission on.
    pub fn relaunch(&mut self, queue: &wgpu::Queue, launch: &kernels::Launch) {
        queue.write_buffer(&self.uniform, 0, &launch.uniform);
        self.dispatch.grid = launch.grid;
    }
}

/// A list of launches recorded `count` times, every copy's uniform blocks in one buffer: work
/// queued for one submission fills a copy per item (an update's learning rate, history slot,
/// batch offsets), and one write carries them all. The kernels and bindings of launch `j` are
/// the same in every copy; only its uniform block and grid differ.
pub struct RecordedCopies {
    uniforms: wgpu::Buffer,
    /// Bytes of one copy's blocks (a multiple of the uniform offset alignment).
    stride: usize,
    /// Byte offset of each launch's block within a copy, and its length.
    blocks: Vec<(usize, usize)>,
    /// Every copy's blocks as the host last set them.
    bytes: Vec<u8>,
    /// `copies[k][j]`: launch `j` of copy `k`.
    copies: Vec<Vec<Dispatch>>,
}

impl RecordedCopies {
    /// Records `launches` (with `buffers[j]` bound to launch `j`, its uniform block last)
    /// `count` times, or as many times as fit one buffer of the device (at least once).
    pub fn new(
        ctx: &GpuContext,
        label: &str,
        launches: &[kernels::Launch],
        buffers: &[Vec<BufferRange<'_>>],
        count: usize,
    ) -> Result<Self> {
        debug_assert_eq!(launches.len(), buffers.len());
        let align = ctx.limits().min_uniform_buffer_offset_alignment as usize;
        let mut blocks = Vec::with_capacity(launches.len());
        let mut stride = 0;
        for l in launches {
            blocks.push((stride, l.uniform.len()));
            stride += l.uniform.len().next_multiple_of(align);
        }
        let stride = stride.max(align);
        ctx.check_size(label, stride as u64, false)?;
        let count = count.min((ctx.limits().max_buffer_size / stride as u64) as usize);
        let mut bytes = vec![0u8; stride * count.max(1)];
        for k in 0..count {
            for (l, &(at, len)) in launches.iter().zip(&blocks) {
                bytes[k * stride + at..][..len].copy_from_slice(&l.uniform);
            }
        }
        let uniforms = ctx.uniform_bytes(label, &bytes);
        let copies = (0..count)
            .map(|k| {
                launches
                    .iter()
                    .zip(buffers)
                    .zip(&blocks)
                    .map(|((l, b), &(at, len))| {
                        let uniform = BufferRange {
                            buffer: &uniforms,
                            offset: (k * stride + at) as u64,
                            size: NonZeroU64::new(len as u64),
                        };
                        ctx.record_with_uniform(l, b, uniform)
                    })
                    .collect()
            })
            .collect();
        Ok(RecordedCopies {
            uniforms,
            stride,
            blocks,
            bytes,
            copies,
        })
    }

    /// How many copies there are.
    pub fn count(&self) -> usize {
        self.copies.len()
    }

    /// Points launch `index` of copy `copy` at `launch`'s uniforms and grid (same kernel, same
    /// bindings), from the next [`RecordedCopies::upload`] on.
    pub fn set(&mut self, copy: usize, index: usize, launch: &kernels::Launch) {
        let (at, len) = self.blocks[index];
        debug_assert_eq!(len, launch.uniform.len(), "{}", launch.kernel.entry);
        self.bytes[copy * self.stride + at..][..len].copy_from_slice(&launch.uniform);
        self.copies[copy][index].grid = launch.grid;
    }

    /// The launches of copy `copy`.
    pub fn dispatches(&self, copy: usize) -> &[Dispatch] {
        &self.copies[copy]
    }

    /// Writes the blocks of the first `copies` copies, in one transfer, ahead of the next
    /// submission.
    pub fn upload(&self, queue: &wgpu::Queue, copies: usize) {
        if copies > 0 {
            queue.write_buffer(&self.uniforms, 0, &self.bytes[..copies * self.stride]);
        }
    }
}
