//! Shared test helpers: the devices to run on, seeded random data, and every tolerance the
//! tests use, kept here so they can be read (and justified) side by side.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use kiln::{AdapterOptions, Device, GpuContext};
use rand::{RngExt, SeedableRng};

/// The options every test context is opened with: the environment's, with split-k off. Tests
/// compare contexts (and runs) bit for bit, and a product the tuner splits rounds differently
/// from one it does not, by what its tuning happened to measure. The split-k tests force it.
pub fn gpu_options() -> AdapterOptions {
    AdapterOptions {
        split_k: Some(false),
        ..AdapterOptions::from_env()
    }
}

/// The GPU shared by all tests of one binary (opening a device per test is slow on lavapipe).
/// `None` when there is no adapter and `CI` is unset; with `CI` set a missing adapter fails
/// the test, since CI must exercise the GPU path.
pub fn gpu() -> Option<Arc<GpuContext>> {
    static GPU: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    let ctx = GPU.get_or_init(|| {
        GpuContext::new(&gpu_options())
            .map(Arc::new)
            .map_err(|e| e.to_string())
    });
    match ctx {
        Ok(ctx) => Some(ctx.clone()),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but no GPU adapter is usable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// The GPU as a `Device`, or `None` (skipped) as [`gpu`] says.
pub fn gpu_device() -> Option<Device> {
    gpu().map(Device::Gpu)
}

/// Runs one test body on every device: `NAME::cpu` and `NAME::gpu`.
/// The body is a function `fn(&Device)`.
#[macro_export]
macro_rules! test_device {
    ($name:ident, $body:path) => {
        mod $name {
            #[test]
            fn cpu() {
                $body(&kiln::Device::Cpu);
            }
            #[test]
            fn gpu() {
                if let Some(device) = $crate::common::gpu_device() {
                    $body(&device);
                }
            }
        }
    };
}

/// `n` values uniform in [lo, hi) from a fixed seed.
pub fn random(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `n` labels in 0..classes from a fixed seed.
pub fn random_labels(n: usize, classes: u32, seed: u64) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..classes)).collect()
}

/// |got − want| ≤ abs + rel·|want|, elementwise.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

/// Matmul, GPU vs CPU. Both sum K products in f32 in different orders (tiles of 16 with fma
/// on the GPU, packed SIMD panels on the CPU); with inputs in [−1, 1) the rounding error grows
/// like √K·ε·(typical |partial sum|), about 1e-5 at K = 3000, so scale by K.
pub fn matmul_tolerance(k: usize) -> Tolerance {
    Tolerance {
        abs: 2e-6 * (k as f32).sqrt().max(1.0) * 4.0,
        rel: 1e-5,
    }
}

/// Activations, GPU vs CPU. exp/tanh on GPUs are allowed a few ulp; GELU's erf on the GPU is
/// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, times |x| ≤ 4 here).
pub const ACTIVATION: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

/// Loss gradients and values, GPU vs CPU: the GPU sums terms in an f32 tree, the CPU in f64;
/// log/exp differ by a few ulp, and BCE's log(1−p) vs log1p(−p) by about 1e-7 relative.
pub const LOSS: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

/// Squared norms and clipping, GPU vs CPU: the GPU sums squares in f32 partials then a tree,
/// the CPU in f64; relative error grows like log2(n)·ε, about 1e-6 at 300k elements.
pub const NORM: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 2e-6,
};

/// SGD: the same f32 operations, though a GPU may fuse a·b + c into one fma (one rounding
/// fewer); a few ulp of values near 1.
pub const SGD: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

/// Every optimizer's update, GPU vs CPU after a few steps: the same f32 operations, but a GPU
/// may fuse a·b + c, and Vulkan allows sqrt and division a few ulp (Adam's denominators);
/// state tensors such as exp_avg_sq are small, so the absolute part dominates there.
pub const OPTIMIZER: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

/// Loss curves of a 50-step training run, GPU vs CPU. Every step's rounding differences
/// (above) feed into the next step's weights; over 50 steps of a contracting optimisation they
/// stayed within 2.5e-7 on lavapipe; the bound leaves room for GPUs whose exp/log are less
/// precise than LLVM's.
pub const LOSS_CURVE: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

/// Panics with the first element out of tolerance, naming `what` and the index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = tol.abs + tol.rel * w.abs();
        assert!(
            err <= bound && g.is_finite() == w.is_finite(),
            "{what}: element {i}: got {g}, want {w} (|err| {err:e} > {bound:e})"
        );
        if err > worst.0 {
            worst = (err, i);
        }
    }
    if std::env::var_os("KILN_TEST_REPORT").is_some() {
        eprintln!("{what}: worst |err| {:e} at {}", worst.0, worst.1);
    }
}
