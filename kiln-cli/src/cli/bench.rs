//! `kiln bench`: the same ops on the GPU and the CPU device, side by side.

use anyhow::{Result, bail};
use kiln::bench::{self, BenchOp, BenchOptions, BenchRow};
use kiln::{Device, DeviceChoice};

use super::BenchArgs;

pub fn bench(args: &BenchArgs) -> Result<()> {
    let ops = args
        .ops
        .iter()
        .map(|o| BenchOp::from_name(o.trim()))
        .collect::<kiln::Result<Vec<_>>>()?;
    args.adapter.options().check()?;
    let mut devices = Vec::new();
    let checks: &[bool] = match args.bounds_checks.as_str() {
        "off" => &[false],
        "on" => &[true],
        "both" => &[false, true],
        other => bail!("--bounds-checks must be off, on or both, got {other:?}"),
    };
    let separate: &[bool] = match args.activations.as_str() {
        "fused" => &[false],
        "separate" => &[true],
        "both" => &[false, true],
        other => bail!("--activations must be fused, separate or both, got {other:?}"),
    };
    if matches!(args.device.as_str(), "gpu" | "both") {
        for &bounds_checks in checks {
            for &separate_activations in separate {
                let opts = kiln::AdapterOptions {
                    bounds_checks,
                    separate_activations,
                    ..args.adapter.options()
                };
                devices.push(Device::select(DeviceChoice::Gpu, &opts)?.0);
            }
        }
    }
    if matches!(args.device.as_str(), "cpu" | "both") {
        devices.push(Device::Cpu);
    }
    if devices.is_empty() {
        bail!("--device must be gpu, cpu or both, got {:?}", args.device);
    }
    let options = BenchOptions { quick: args.quick };
    let mut rows = Vec::new();
    for device in &devices {
        // Beside the fused device, the separate one adds only the rows fusion changes.
        let separate_beside_fused =
            separate.len() > 1 && matches!(device, Device::Gpu(ctx) if !ctx.fuses_activations());
        let device_ops: Vec<BenchOp> = ops
            .iter()
            .copied()
            .filter(|o| {
                !separate_beside_fused
                    || matches!(o, BenchOp::TrainStep | BenchOp::Profile | BenchOp::Epoch)
            })
            .collect();
        rows.extend(bench::run(device, &device_ops, options)?);
    }
    bench::compare(&mut rows);
    if args.json {
        outln!("{}", serde_json::json!({ "results": rows }))?;
    } else {
        print_table(&rows)?;
    }
    Ok(())
}

fn print_table(rows: &[BenchRow]) -> Result<()> {
    for adapter in rows
        .iter()
        .map(|r| (r.device.kind(), r.device.adapter()))
        .collect::<std::collections::BTreeSet<_>>()
    {
        outln!("{}: {}", adapter.0, adapter.1)?;
    }
    outln!(
        "{:<13} {:<19} {:<44} {:>12} {:>11} {:>10} {:>7} {:>9} {:>10} {:>9}  tiles",
        "op",
        "dev",
        "shape",
        "median",
        "GFLOP/s",
        "GB/s",
        "% peak",
        "GPU/CPU",
        "host",
        "timing"
    )?;
    let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |x| format!("{x:.p$}"));
    for r in rows {
        outln!(
            "{:<13} {:<19} {:<44} {:>12} {:>11} {:>10} {:>7} {:>9} {:>10} {:>9}  {}",
            r.measured.op(),
            r.device.kind(),
            r.measured.shape(),
            format!("{:.3} ms", r.median_s * 1e3),
            f(r.gflops, 1),
            f(r.gbps, 1),
            f(r.pct_peak, 1),
            r.gpu_speedup.map_or("-".into(), |s| format!("{s:.3}x")),
            r.host_s
                .map_or("-".into(), |h| format!("{:.1} µs", h * 1e6)),
            r.timing.name(),
            r.tiles.map_or(String::new(), |t| t.to_string())
        )?;
    }
    Ok(())
}
