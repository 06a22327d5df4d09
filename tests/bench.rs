//! `kiln bench` on the GPU: every op measures, with GPU timestamps where the adapter has them,
//! and the GPU rows get their ratio to the CPU device.

mod common;

use kiln::bench::{self, BenchOp, BenchOptions, Timing};
use kiln::{Device, wgpu};

#[test]
fn every_op_measures_on_the_gpu_and_compares_with_the_cpu() {
    let Some(ctx) = common::gpu() else { return };
    let timestamps = ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let gpu = Device::Gpu(ctx);
    let options = BenchOptions { quick: true };
    // The small sizes only: the square 512³ product is slow on a software adapter.
    let mut rows = bench::run(
        &gpu,
        &[
            BenchOp::Copy,
            BenchOp::Optimizers,
            BenchOp::TrainStep,
            BenchOp::Epoch,
        ],
        options,
    )
    .unwrap();
    rows.extend(
        bench::run(
            &Device::Cpu,
            &[
                BenchOp::Copy,
                BenchOp::Optimizers,
                BenchOp::TrainStep,
                BenchOp::Epoch,
            ],
            options,
        )
        .unwrap(),
    );
    bench::compare(&mut rows);
    for r in rows.iter().filter(|r| r.device.kind() == "gpu") {
        assert!(r.median_s > 0.0 && r.median_s.is_finite(), "{r:?}");
        // The GPU's epoch one update per submission has no CPU twin.
        let alone = r.measured.shape().ends_with(", 1 per submit");
        assert_eq!(
            r.gpu_speedup.is_some(),
            !alone,
            "CPU row to compare with: {r:?}"
        );
        if !matches!(
            r.measured.op(),
            "train_step" | "train_loop" | "resident_step" | "epoch"
        ) {
            let want = if timestamps {
                Timing::Timestamp
            } else {
                Timing::Wall
            };
            assert_eq!(r.timing, want, "{r:?}");
        } else {
            assert!(r.host_s.unwrap() > 0.0, "{r:?}");
        }
    }
    // copy, one row per optimizer, the train step from the host alone and in a loop and from
    // resident data, the epoch with updates submitted together and one by one
    let optimizers = kiln::optim::REGISTRY.len();
    assert_eq!(
        rows.iter().filter(|r| r.device.kind() == "gpu").count(),
        6 + optimizers
    );
    let steps: Vec<(&str, String)> = rows
        .iter()
        .filter(|r| r.device.kind() == "gpu")
        .filter(|r| {
            matches!(
                r.measured.op(),
                "train_step" | "train_loop" | "resident_step"
            )
        })
        .map(|r| (r.measured.op(), r.measured.shape()))
        .collect();
    assert_eq!(
        steps,
        ["train_step", "train_loop", "resident_step"]
            .map(|op| (op, "64->128->10 batch 32".to_string()))
    );
    let resident = rows
        .iter()
        .find(|r| r.measured.op() == "resident_step" && r.device.kind() == "gpu")
        .unwrap();
    assert_eq!(resident.measured.shape(), "64->128->10 batch 32");
    let epochs: Vec<String> = rows
        .iter()
        .filter(|r| r.measured.op() == "epoch" && r.device.kind() == "gpu")
        .map(|r| r.measured.shape())
        .collect();
    assert_eq!(
        epochs,
        [
            "4096x64 64->128->10 batch 256",
            "4096x64 64->128->10 batch 256, 1 per submit"
        ]
    );
    let epoch = rows
        .iter()
        .find(|r| r.measured.op() == "epoch" && r.device.kind() == "gpu")
        .unwrap();
    assert_eq!(epoch.measured.shape(), "4096x64 64->128->10 batch 256");
    assert!(
        epoch.gflops.unwrap() > 0.0 && epoch.host_s.unwrap() > 0.0,
        "{epoch:?}"
    );
    for r in rows.iter().filter(|r| r.measured.op() == "adam") {
        // p, g, exp_avg, exp_avg_sq: 7 words per parameter moved, compared with the copy.
        assert!(r.gbps.unwrap() > 0.0 && r.pct_peak.unwrap() > 0.0, "{r:?}");
    }
}

/// `--ops profile`: the resident step of the train_step case, kernel by kernel in the order it
/// runs (GPU timestamps; wall time on the CPU device), each product with its rate and on the GPU
/// its tile, then the parts' sum and the whole update.
#[test]
fn profile_rows_take_a_step_apart_on_each_device() {
    let Some(ctx) = common::gpu() else { return };
    let timestamps = ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let options = BenchOptions { quick: true };
    for device in [Device::Gpu(ctx), Device::Cpu] {
        let rows = bench::run(&device, &[BenchOp::Profile], options).unwrap();
        let gpu = matches!(device, Device::Gpu(_));
        if gpu && !timestamps {
            assert!(rows.is_empty(), "{rows:?}");
            continue;
        }
        let shapes: Vec<String> = rows.iter().map(|r| r.measured.shape()).collect();
        assert!(
            rows.iter().all(|r| r.measured.op() == "profile"),
            "{shapes:?}"
        );
        assert_eq!(shapes[0], "64->128->10 batch 32: 00 gather batch");
        assert!(
            shapes[1].starts_with("64->128->10 batch 32: 01 matmul 32x128x64 nt"),
            "{shapes:?}"
        );
        let n = rows.len();
        assert_eq!(
            shapes[n - 3],
            format!("64->128->10 batch 32: {:02} sgd update", n - 3)
        );
        assert_eq!(shapes[n - 2], "64->128->10 batch 32: sum of kernels");
        assert_eq!(shapes[n - 1], "64->128->10 batch 32: whole update");
        let sum: f64 = rows[..n - 2].iter().map(|r| r.median_s).sum();
        assert!(
            (rows[n - 2].median_s - sum).abs() <= 1e-12 * sum.max(1.0),
            "{rows:?}"
        );
        assert!(
            rows[n - 2].median_s > 0.0 && rows[n - 1].median_s > 0.0,
            "{rows:?}"
        );
        for r in &rows {
            // A part can be shorter than a coarse clock's tick.
            assert!(r.median_s >= 0.0 && r.median_s.is_finite(), "{r:?}");
            let want = if gpu { Timing::Timestamp } else { Timing::Wall };
            assert_eq!(r.timing, want, "{r:?}");
            let product = r.measured.shape().contains("matmul");
            assert_eq!(r.gflops.is_some(), product, "{r:?}");
            assert_eq!(r.tiles.is_some(), product && gpu, "{r:?}");
        }
    }
}
