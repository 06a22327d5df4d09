//! `kiln bench` on the GPU: every op measures, with GPU timestamps where the adapter has them,
//! and the GPU rows get their ratio to the CPU device.

mod common;

use kiln::bench::{self, BenchOp, BenchOptions};
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
        &[BenchOp::Copy, BenchOp::Sgd, BenchOp::TrainStep],
        options,
    )
    .unwrap();
    rows.extend(
        bench::run(
            &Device::Cpu,
            &[BenchOp::Copy, BenchOp::Sgd, BenchOp::TrainStep],
            options,
        )
        .unwrap(),
    );
    bench::compare(&mut rows);
    for r in rows.iter().filter(|r| r.device == "gpu") {
        assert!(r.median_s > 0.0 && r.median_s.is_finite(), "{r:?}");
        assert!(r.gpu_speedup.is_some(), "no CPU row to compare with: {r:?}");
        if r.op != "train_step" {
            assert_eq!(
                r.timing,
                if timestamps { "timestamp" } else { "wall" },
                "{r:?}"
            );
        } else {
            assert!(r.host_s.unwrap() > 0.0, "{r:?}");
        }
    }
    assert_eq!(rows.iter().filter(|r| r.device == "gpu").count(), 3);
}
