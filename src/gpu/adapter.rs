//! Choosing a wgpu adapter: by backend and name substring, preferring discrete GPUs, then
//! integrated, then virtual, then software. wgpu's own env helpers panic on a bad value; these
//! return errors that list what there is.

use crate::error::{KilnError, Result};

/// How to pick an adapter. `Default` takes the best adapter of any backend.
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// `vulkan`, `metal`, `dx12` or `gl` (`KILN_BACKEND`).
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter's name (`KILN_ADAPTER`).
    pub adapter: Option<String>,
    /// Compile kernels with all of wgpu's runtime checks, bounds checks and loop bounding
    /// (`KILN_BOUNDS_CHECKS=1`). Off by default: every kernel guards its own indices, every
    /// binding's size is checked on the host and every loop provably ends (see
    /// `GpuContext::pipeline`), so the checks only cost time — loop bounding 10–20× on the
    /// matmul of an H200.
    pub bounds_checks: bool,
    /// Caps `max_buffer_size` below the adapter's, in bytes: how a model splits on a smaller
    /// device can be seen (and tested) on a larger one.
    pub max_buffer_size: Option<u64>,
    /// Caps `max_storage_buffer_binding_size` below the adapter's, in bytes (as
    /// `max_buffer_size`).
    pub max_storage_binding: Option<u64>,
    /// Caps the device memory Kiln budgets for, in bytes (as `max_buffer_size`).
    pub max_device_memory: Option<u64>,
    /// Run each activation as a kernel of its own instead of in the epilogue of the product
    /// next to it (forward: the dense layer's before it; backward: the dX product of the one
    /// after it) (`KILN_SEPARATE_ACTIVATIONS=1`): the same numbers, two more launches and two
    /// more passes over the layer's output per activation. For measuring what the fusion
    /// gains on a device.
    pub separate_activations: bool,
    /// Tune each product's tile shape on that product (`GpuContext::matmul_tile`): `None`
    /// does it on GPUs and not on software adapters, where timing every candidate on every
    /// new shape costs seconds (`KILN_TUNE_SHAPES=0` or `1`).
    pub tune_shapes: Option<bool>,
    /// One matmul tile shape for every product, as [`TileConfig::parse`] reads it
    /// (`KILN_MATMUL_TILES`), instead of the tuned or cached choice: how a shape is tried out
    /// on a whole run. Checked when the device first multiplies.
    ///
    /// [`TileConfig::parse`]: crate::gpu::matmul_tiles::TileConfig::parse
    pub matmul_tiles: Option<String>,
    /// Whether the per-product tuner may split k (`KILN_SPLIT_K=0` or `1`; `None`: it may).
    /// Split-k rounds differently from the plain product, so with it on a product's values
    /// depend on what its tuning measured (cached per adapter); off, every product gives the
    /// same values whatever shape the tuner picks. A shape forced with `/splitS` splits anyway.
    pub split_k: Option<bool>,
}

impl AdapterOptions {
    /// Reads `KILN_BACKEND`, `KILN_ADAPTER`, `KILN_BOUNDS_CHECKS`,
    /// `KILN_SEPARATE_ACTIVATIONS`, `KILN_TUNE_SHAPES`, `KILN_MATMUL_TILES` and `KILN_SPLIT_K`.
    pub fn from_env() -> Self {
        let get = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        // Set, and anything but a clear "off", is on.
        let on = |k| {
            get(k).map(|v| {
                !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "0" | "false" | "off" | "no"
                )
            })
        };
        AdapterOptions {
            backend: get("KILN_BACKEND"),
            adapter: get("KILN_ADAPTER"),
            // Anything but a clear "off" keeps the checks: the checked build is the safe one.
            bounds_checks: on("KILN_BOUNDS_CHECKS").unwrap_or(false),
            max_buffer_size: None,
            max_storage_binding: None,
            max_device_memory: None,
            separate_activations: on("KILN_SEPARATE_ACTIVATIONS").unwrap_or(false),
            tune_shapes: on("KILN_TUNE_SHAPES"),
            matmul_tiles: get("KILN_MATMUL_TILES"),
            split_k: on("KILN_SPLIT_K"),
        }
    }

    /// Errs on a backend name Kiln does not know, whatever device is chosen: a typo in
    /// `--backend` or `KILN_BACKEND` is not silently ignored on the CPU device.
    pub fn check(&self) -> Result<()> {
        self.backends().map(drop)
    }

    pub(crate) fn backends(&self) -> Result<wgpu::Backends> {
        let Some(name) = &self.backend else {
            return Ok(wgpu::Backends::all());
        };
        match name.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
            "metal" | "mtl" => Ok(wgpu::Backends::METAL),
            "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
            "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
            other => Err(KilnError::invalid(
                "backend",
                format!("unknown backend {other:?}; use vulkan, metal, dx12 or gl"),
            )),
        }
    }
}

/// Rank for "prefer discrete, then integrated, then software" (lower is better).
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// True for adapters that are real hardware (not llvmpipe/lavapipe, WARP, SwiftShader).
pub fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    !matches!(
        info.device_type,
        wgpu::DeviceType::Cpu | wgpu::DeviceType::Other
    )
}

/// Mesa's llvmpipe loop cap (`LP_MAX_TGSI_LOOP_ITERATIONS`): see [`loop_limit`].
pub const LLVMPIPE_LOOP_LIMIT: u64 = 65_535;

/// The most loop iterations one shader invocation may run in all on this adapter, where the
/// driver cuts loops short: Mesa's llvmpipe (lavapipe, and its GL driver) ends every loop of
/// an invocation once 65,535 iterations have run, counting all its loops together, and the
/// results are silently wrong. `None`: no such limit.
pub fn loop_limit(info: &wgpu::AdapterInfo) -> Option<u64> {
    info.name
        .contains("llvmpipe")
        .then_some(LLVMPIPE_LOOP_LIMIT)
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

pub(crate) fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Every adapter of the chosen backends, best first.
pub fn enumerate(opts: &AdapterOptions) -> Result<Vec<wgpu::Adapter>> {
    let instance = new_instance(opts.backends()?);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(opts.backends()?));
    adapters.sort_by_key(|a| preference(a.get_info().device_type));
    Ok(adapters)
}

/// The adapter `opts` asks for, or an error naming what there is.
pub fn select(opts: &AdapterOptions) -> Result<wgpu::Adapter> {
    matching(opts)?.into_iter().next().ok_or_else(|| {
        let detail = match &opts.backend {
            Some(b) => format!(" for backend {b}"),
            None => String::new(),
        };
        KilnError::NoAdapter { detail }
    })
}

/// Every adapter of the chosen backends whose name contains `opts.adapter` (all of them
/// without one), best first; an error naming every adapter there is when there are some but
/// none matches.
pub fn matching(opts: &AdapterOptions) -> Result<Vec<wgpu::Adapter>> {
    let mut adapters = enumerate(opts)?;
    let Some(wanted) = &opts.adapter else {
        return Ok(adapters);
    };
    let available = adapters
        .iter()
        .map(|a| describe(&a.get_info()))
        .collect::<Vec<_>>()
        .join("; ");
    let needle = wanted.to_lowercase();
    let all = adapters.len();
    adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
    if adapters.is_empty() && all > 0 {
        return Err(KilnError::AdapterNotFound {
            wanted: wanted.clone(),
            available,
        });
    }
    Ok(adapters)
}

/// The adapter's device-local memory in bytes (its largest `DEVICE_LOCAL` heap on Vulkan),
/// which every buffer of a run must fit in together; `None` where the backend does not say
/// (wgpu has no query for it; see gfx-rs/wgpu#2447).
pub fn device_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    #[cfg(not(any(target_vendor = "apple", target_arch = "wasm32")))]
    {
        // SAFETY: reads the physical device's memory properties through the instance that
        // made it; both outlive the call, and nothing is created or destroyed.
        let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
        let instance = hal.shared_instance().raw_instance();
        let props =
            unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
        // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.
        const DEVICE_LOCAL: u32 = 0x1;
        props
            .memory_heaps
            .iter()
            .take(props.memory_heap_count as usize)
            .filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0)
            .map(|h| h.size)
            .max()
    }
    #[cfg(any(target_vendor = "apple", target_arch = "wasm32"))]
    {
        let _ = adapter;
        None
    }
}
