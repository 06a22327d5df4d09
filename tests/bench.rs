//! `kiln bench` on the GPU: every op measures, with GPU timestamps where the adapter has them,
//! and the GPU rows get their ratio to the CPU device.

mod common;

use common::kiln;
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
        &[BenchOp::Copy, BenchOp::Optimizers, BenchOp::TrainStep],
        options,
    )
    .unwrap();
    rows.extend(
        bench::run(
            &Device::Cpu,
            &[BenchOp::Copy, BenchOp::Optimizers, BenchOp::TrainStep],
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
    // copy, one row per optimizer, the train step
    let optimizers = kiln::optim::REGISTRY.len();
    assert_eq!(
        rows.iter().filter(|r| r.device == "gpu").count(),
        2 + optimizers
    );
    for r in rows.iter().filter(|r| r.op == "adam") {
        // p, g, exp_avg, exp_avg_sq: 7 words per parameter moved, compared with the copy.
        assert!(r.gbps.unwrap() > 0.0 && r.pct_peak.unwrap() > 0.0, "{r:?}");
    }
}

/// `kiln tune` times every tile shape that fits, marks one choice per timed class, and caches
/// the choice where KILN_CACHE_DIR says; a bad KILN_MATMUL_TILES is an error naming it.
#[test]
fn tune_times_every_tile_shape_and_caches_the_choice() {
    let Some(ctx) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("kiln-tune-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.to_str().unwrap();
    let out = kiln(&["tune"], &[("KILN_CACHE_DIR", cache)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fitting = kiln::gpu::matmul_tiles::CANDIDATES
        .iter()
        .filter(|c| c.fits(ctx.limits()))
        .count();
    for class in ["tiny", "small", "medium", "large"] {
        let timed = text
            .lines()
            .filter(|l| l.starts_with(class) && !l.contains("not timed"))
            .count();
        let chosen = text
            .lines()
            .filter(|l| l.starts_with(class) && l.ends_with("<- chosen"))
            .count();
        // Each class is timed on every fitting shape, vec4 and scalar, or not at all.
        assert!(timed == 2 * fitting || timed == 0, "{class}: {text}");
        assert_eq!(chosen, (timed > 0) as usize, "{class}: {text}");
    }
    let file = std::fs::read_to_string(dir.join("matmul-tiles.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let entry = v["adapters"].as_object().unwrap().values().next().unwrap();
    assert_eq!(entry["source"], "measured", "{file}");
    // `kiln devices` shows the cached choice for the adapter tuned, and says when there is none.
    let devices = kiln(&["devices"], &[("KILN_CACHE_DIR", cache)]);
    let listing = String::from_utf8_lossy(&devices.stdout);
    let tiny: kiln::gpu::matmul_tiles::TileConfig =
        serde_json::from_value(entry["tiny"].clone()).unwrap();
    let shown = format!("matmul tiles tiny {tiny}, small ");
    assert!(
        listing.contains(&shown) && listing.contains("(measured, cached)"),
        "{listing}"
    );
    let empty = dir.join("empty");
    let devices = kiln(&["devices"], &[("KILN_CACHE_DIR", empty.to_str().unwrap())]);
    let listing = String::from_utf8_lossy(&devices.stdout);
    assert!(!listing.contains("(measured, cached)"), "{listing}");
    assert!(
        listing.contains("matmul tiles not measured yet"),
        "{listing}"
    );

    let out = kiln(
        &["bench", "--device", "gpu", "--ops", "matmul", "--quick"],
        &[
            ("KILN_CACHE_DIR", cache),
            ("KILN_MATMUL_TILES", "64x64x6/4x4"),
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("KILN_MATMUL_TILES") && e.contains("multiple of 4"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
