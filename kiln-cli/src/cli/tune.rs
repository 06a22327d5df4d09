//! `kiln tune`: time every matmul tile shape on the GPU, keep the fastest per output size, and
//! print the table behind the choice.

use anyhow::Result;
use kiln::GpuContext;
use kiln::gpu::matmul_tiles::{self, SizeClass};

use super::AdapterArgs;

pub fn tune(adapter: &AdapterArgs) -> Result<()> {
    let ctx = GpuContext::new(&adapter.options())?;
    outln!("adapter: {}", ctx.name())?;
    let (tiling, rows, cached) = ctx.retune_matmul()?;
    outln!(
        "{:<7} {:<14} {:<22} {:>12} {:>10}",
        "class",
        "product",
        "tiles",
        "median",
        "GFLOP/s"
    )?;
    for r in &rows {
        let d = r.dims;
        let chosen = tiling.get(r.class) == r.config;
        outln!(
            "{:<7} {:<14} {:<22} {:>12} {:>10.1}{}",
            r.class.name(),
            format!("{}x{}x{}", d.m, d.n, d.k),
            r.config.to_string(),
            format!("{:.3} ms", r.median_s * 1e3),
            2.0 * (d.m * d.n * d.k) as f64 / r.median_s / 1e9,
            if chosen { "  <- chosen" } else { "" }
        )?;
    }
    for class in SizeClass::ALL {
        if !rows.iter().any(|r| r.class == class) {
            outln!(
                "{:<7} not timed: one product at {}² takes over {} ms here; uses {}",
                class.name(),
                class.timed_dims().m,
                matmul_tiles::TUNE_BUDGET_S * 1e3,
                tiling.get(class)
            )?;
        }
    }
    match cached {
        Ok(Some(file)) => outln!("cached in {}", file.display())?,
        Ok(None) => outln!("nothing was timed here: the shapes come from the adapter's limits")?,
        Err(why) => anyhow::bail!("the choice was not cached: {why}"),
    }
    Ok(())
}
