//! Host → device write paths timed side by side on one adapter: a plain memcpy (the host's
//! floor), `queue.write_buffer`, `write_buffer_with`, `GpuContext::write_finite` (whose first
//! writes alternate between one thread and several while it measures which to keep), its
//! check-and-copy on 1, 2, 4 and 8 threads, a staging belt, a MAP_WRITE buffer kept mapped, and
//! the write into such a mapping alone. Which path `GpuContext::write_finite` uses was chosen
//! from these figures (BENCHMARKS.md).
//! `cargo run --release --example upload_paths`.
use std::num::NonZeroU64;
use std::time::Instant;

const REPS: usize = 15;

/// Threads in rayon's pool, which `write_finite_on` shares a write over.
fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `write` REPS times; prints the median host time (the call) and total time (the call,
/// then waiting for the GPU to finish what it submitted).
fn time(ctx: &kiln::GpuContext, name: &str, bytes: usize, mut write: impl FnMut()) {
    let (mut host, mut total) = (vec![], vec![]);
    for _ in 0..REPS {
        let t0 = Instant::now();
        write();
        host.push(t0.elapsed().as_secs_f64());
        ctx.wait_idle().unwrap();
        total.push(t0.elapsed().as_secs_f64());
    }
    let (h, t) = (median(host), median(total));
    let gbps = |s: f64| bytes as f64 / s / 1e9;
    println!(
        "{name:<24} {:>9} floats  host {:>8.1} µs ({:>6.2} GB/s)  total {:>8.1} µs ({:>6.2} GB/s)",
        bytes / 4,
        h * 1e6,
        gbps(h),
        t * 1e6,
        gbps(t)
    );
}

fn main() {
    let ctx = kiln::GpuContext::new(&kiln::AdapterOptions::from_env()).unwrap();
    println!("adapter: {}", ctx.name());
    let (device, queue) = (&ctx.device, &ctx.queue);
    for floats in [200_704usize, 802_816, 8_000_000] {
        let bytes = floats * 4;
        let size = NonZeroU64::new(bytes as u64).unwrap();
        let data: Vec<f32> = (0..floats).map(|i| (i % 17) as f32).collect();
        let raw: &[u8] = bytemuck::cast_slice(&data);
        let target = ctx.storage_buffer("target", floats).unwrap();

        let mut sink = vec![0u8; bytes];
        time(&ctx, "memcpy", bytes, || {
            sink.copy_from_slice(std::hint::black_box(raw));
            std::hint::black_box(&mut sink);
        });
        // A new staging allocation per call.
        time(&ctx, "queue.write_buffer", bytes, || {
            queue.write_buffer(&target, 0, raw);
            queue.submit([]);
        });
        // Straight into the staging memory.
        time(&ctx, "write_buffer_with", bytes, || {
            queue
                .write_buffer_with(&target, 0, size)
                .unwrap()
                .copy_from_slice(raw);
            queue.submit([]);
        });
        // The same, checking each run of values as it copies it: as a trainer writes a batch,
        // and on 1, 2, 4 and 8 threads.
        time(&ctx, "write_finite", bytes, || {
            ctx.write_finite(&target, &data, "x").unwrap();
            queue.submit([]);
        });
        for threads in [1, 2, 4, 8].into_iter().filter(|&t| t <= rayon_threads()) {
            time(&ctx, &format!("write_finite on {threads}"), bytes, || {
                ctx.write_finite_on(&target, &data, "x", threads).unwrap();
                queue.submit([]);
            });
        }
        // MAP_WRITE buffers kept and reused.
        let mut belt = wgpu::util::StagingBelt::new(device.clone(), bytes as u64);
        time(&ctx, "staging belt", bytes, || {
            let mut encoder = device.create_command_encoder(&Default::default());
            belt.write_buffer(&mut encoder, &target, 0, size)
                .copy_from_slice(raw);
            belt.finish();
            queue.submit([encoder.finish()]);
            belt.recall();
        });
        // One MAP_WRITE buffer: written, unmapped, copied, mapped again (no allocation).
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload_paths staging"),
            size: bytes as u64,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        time(&ctx, "mapped MAP_WRITE", bytes, || {
            staging
                .slice(..)
                .get_mapped_range_mut()
                .unwrap()
                .copy_from_slice(raw);
            staging.unmap();
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&staging, 0, &target, 0, bytes as u64);
            queue.submit([encoder.finish()]);
            staging.slice(..).map_async(wgpu::MapMode::Write, |_| {});
        });
        // The write into the mapping alone: that memory's write speed.
        time(&ctx, "write into mapping", bytes, || {
            staging
                .slice(..)
                .get_mapped_range_mut()
                .unwrap()
                .copy_from_slice(raw)
        });
        staging.unmap();
    }
}
