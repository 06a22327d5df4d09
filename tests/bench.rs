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
        if !matches!(r.measured.op(), "train_step" | "resident_step" | "epoch") {
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
    // copy, one row per optimizer, the train step from the host and from resident data, the
    // epoch with updates submitted together and one by one
    let optimizers = kiln::optim::REGISTRY.len();
    assert_eq!(
        rows.iter().filter(|r| r.device.kind() == "gpu").count(),
        5 + optimizers
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
