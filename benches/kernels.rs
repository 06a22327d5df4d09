//! Criterion benchmarks of the same ops as `kiln bench`, each kernel beside its CPU twin:
//! `cargo bench`. Throughput is set, so criterion reports FLOP/s ("elements") for matmul and
//! training steps and bytes/s for the copy and the optimizer updates. GPU figures are wall time around
//! submit + wait; on a software adapter (lavapipe) they are meaningless for speed.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln::bench::GpuOp;
use kiln::schedule::Scheduler;
use kiln::train::TrainOptions;
use kiln::{
    Activation, AdapterOptions, Device, GpuContext, Layer, Loss, MatmulDims, Sequential, Targets,
    Trainer, Transpose,
};

fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::new(&AdapterOptions::from_env()) {
        Ok(ctx) => Some(Arc::new(ctx)),
        Err(e) => {
            eprintln!("GPU benchmarks skipped: {e}");
            None
        }
    }
}

fn matmul(c: &mut Criterion) {
    let gpu = gpu();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    for s in [128usize, 256] {
        let dims = MatmulDims { m: s, n: s, k: s };
        group.throughput(Throughput::Elements(2 * (s * s * s) as u64));
        let (a, b) = (vec![0.5f32; s * s], vec![0.25f32; s * s]);
        let mut out = vec![0.0f32; s * s];
        group.bench_function(BenchmarkId::new("cpu", s), |bench| {
            bench.iter(|| kiln::cpu::matmul::matmul(&a, &b, None, &mut out, dims, Transpose::Nn))
        });
        if let Some(ctx) = &gpu {
            let op = GpuOp::matmul(ctx, dims, Transpose::Nn).unwrap();
            group.bench_function(BenchmarkId::new("gpu", s), |bench| {
                bench.iter(|| op.run().unwrap())
            });
        }
    }
    group.finish();
}

fn updates_and_copy(c: &mut Criterion) {
    let gpu = gpu();
    let n = 1 << 20;
    let mut group = c.benchmark_group("bandwidth");
    group.sample_size(10);
    for optimizer in kiln::bench::bench_optimizer_set() {
        let name = optimizer.name();
        let (mut p, g) = (vec![1.0f32; n], vec![0.001f32; n]);
        let mut state = optimizer.new_state(n);
        let uniform = kiln::bench::steady_update(&optimizer, n).unwrap();
        group.throughput(Throughput::Bytes(
            kiln::bench::update_bytes(&optimizer, n) as u64
        ));
        group.bench_function(format!("{name}/cpu"), |bench| {
            bench.iter(|| {
                kiln::optim::update_arena(
                    optimizer.rule(),
                    &uniform.scalars,
                    &[],
                    &mut p,
                    &g,
                    &mut state.blocks,
                )
            })
        });
        if let Some(ctx) = &gpu {
            let op = GpuOp::update(ctx, &optimizer, n).unwrap();
            group.bench_function(format!("{name}/gpu"), |bench| {
                bench.iter(|| op.run().unwrap())
            });
        }
    }
    let (src, mut dst) = (vec![1.0f32; n], vec![0.0f32; n]);
    group.throughput(Throughput::Bytes(2 * 4 * n as u64));
    group.bench_function("copy/cpu", |bench| {
        bench.iter(|| dst.copy_from_slice(std::hint::black_box(&src)))
    });
    if let Some(ctx) = &gpu {
        let op = GpuOp::copy(ctx, n).unwrap();
        group.bench_function("copy/gpu", |bench| bench.iter(|| op.run().unwrap()));
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let gpu = gpu();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    // The small MLP where host overhead dominates: 64 → 128 → 10, batch 32.
    let (input, hidden, classes, batch) = (64, 128, 10, 32);
    group.throughput(Throughput::Elements(
        6 * (batch * (input * hidden + hidden * classes)) as u64,
    ));
    let x: Vec<f32> = (0..batch * input).map(|i| (i % 13) as f32 / 13.0).collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
    let mut devices = vec![("cpu", Device::Cpu)];
    if let Some(ctx) = gpu {
        devices.push(("gpu", Device::Gpu(ctx)));
    }
    for (name, device) in devices {
        let layers = vec![
            Layer::Dense { out: hidden },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: classes },
        ];
        let model = Sequential::new(input, layers, Loss::CrossEntropy).unwrap();
        let options = TrainOptions {
            max_batch: batch,
            ..Default::default()
        };
        let mut trainer =
            Trainer::new(&device, model, options, Scheduler::fixed(0.01).unwrap()).unwrap();
        group.bench_function(name, |bench| {
            bench.iter(|| {
                trainer.step(&x, Targets::Classes(&labels)).unwrap();
                // One bulk read waits for the GPU, so each iteration times a finished step.
                trainer.losses().unwrap().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, updates_and_copy, train_step);
criterion_main!(benches);
