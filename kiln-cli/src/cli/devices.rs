//! `kiln devices`: every adapter with the limits and features Kiln uses.

use anyhow::Result;
use kiln::AdapterOptions;
use kiln::gpu::{adapter, matmul_tiles};

pub fn devices(opts: &AdapterOptions) -> Result<()> {
    let adapters = adapter::matching(opts)?;
    if adapters.is_empty() {
        outln!(
            "No GPU adapters. {}",
            kiln::KilnError::NoAdapter {
                detail: String::new()
            }
        )?;
        outln!("The CPU device (--device cpu) is always available.")?;
        return Ok(());
    }
    for (i, a) in adapters.iter().enumerate() {
        let info = a.get_info();
        let limits = a.limits();
        let features = a.features();
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let yes = |f| if features.contains(f) { "yes" } else { "no" };
        outln!("[{i}] {}", info.name)?;
        outln!("    backend      {:?}", info.backend)?;
        outln!(
            "    type         {:?}{}",
            info.device_type,
            if adapter::is_hardware(&info) {
                ""
            } else {
                " (software)"
            }
        )?;
        outln!("    driver       {} {}", info.driver, info.driver_info)?;
        match adapter::device_memory(a) {
            Some(bytes) => outln!("    memory       {}", mib(bytes))?,
            None => outln!("    memory       not reported by the backend (not budgeted)")?,
        }
        outln!("    max buffer   {}", mib(limits.max_buffer_size))?;
        outln!(
            "    max storage binding   {}",
            mib(limits.max_storage_buffer_binding_size)
        )?;
        outln!(
            "    workgroup storage     {} KiB",
            limits.max_compute_workgroup_storage_size / 1024
        )?;
        outln!(
            "    invocations/workgroup {}",
            limits.max_compute_invocations_per_workgroup
        )?;
        outln!(
            "    subgroups {}, f16 {}, timestamp queries {}",
            yes(kiln::wgpu::Features::SUBGROUP),
            yes(kiln::wgpu::Features::SHADER_F16),
            yes(kiln::wgpu::Features::TIMESTAMP_QUERY)
        )?;
        if let Some(limit) = adapter::loop_limit(&info) {
            outln!(
                "    loop cap     {limit} iterations per shader thread (kernels that would \
                 reach it are refused)"
            )?;
        }
        let cached = matmul_tiles::cache_dir().and_then(|dir| {
            matmul_tiles::load_cached(&dir, &matmul_tiles::adapter_cache_key(&info))
        });
        match cached {
            Some(t) => outln!(
                "    matmul tiles tiny {}, small {}, medium {}, large {} (measured, cached)",
                t.tiny,
                t.small,
                t.medium,
                t.large
            )?,
            None => outln!("    matmul tiles not measured yet (first use, or kiln tune)")?,
        }
    }
    outln!("CPU device (--device cpu): always available")?;
    Ok(())
}
