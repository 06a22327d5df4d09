//! Host → device write paths timed side by side on one adapter: a plain memcpy (the host's
//! floor), `queue.write_buffer`, `write_buffer_with`, `GpuContext::write_finite`, a staging belt, a MAP_WRITE buffer kept
//! mapped, and the write into such a mapping alone. Which one `GpuContext::write_finite` uses was
//! chosen from its figures (BENCHMARKS.md). `cargo run --release --example upload_paths`.
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let ctx = kiln::GpuContext::new(&kiln::AdapterOptions::from_env()).unwrap();
    println!("adapter: {}", ctx.name());
    let (device, queue) = (&ctx.device, &ctx.queue);
    for floats in [200_704usize, 802_816, 8_000_000] {
        let bytes = floats * 4;
        let data: Vec<f32> = (0..floats).map(|i| (i % 17) as f32).collect();
        let raw: &[u8] = bytemuck::cast_slice(&data);
        let target = ctx.storage_buffer("target", floats).unwrap();
        let reps = 15;
        let report = |name: &str, host: Vec<f64>, total: Vec<f64>| {
            let (h, t) = (median(host), median(total));
            println!(
                "{name:<22} {floats:>9} floats  host {:>8.1} µs ({:>6.2} GB/s)  total {:>8.1} µs ({:>6.2} GB/s)",
                h * 1e6,
                bytes as f64 / h / 1e9,
                t * 1e6,
                bytes as f64 / t / 1e9
            );
        };
        // 0: memcpy into a host Vec (the floor).
        let mut sink = vec![0u8; bytes];
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            sink.copy_from_slice(std::hint::black_box(raw));
            host.push(t0.elapsed().as_secs_f64());
            total.push(t0.elapsed().as_secs_f64());
        }
        report("memcpy", host, total);
        // 1: queue.write_buffer (a new staging allocation per call).
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            queue.write_buffer(&target, 0, raw);
            queue.submit([]);
            host.push(t0.elapsed().as_secs_f64());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            total.push(t0.elapsed().as_secs_f64());
        }
        report("queue.write_buffer", host, total);
        // 2: write_buffer_with (straight into the staging memory).
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            {
                let mut view = queue
                    .write_buffer_with(&target, 0, std::num::NonZeroU64::new(bytes as u64).unwrap())
                    .unwrap();
                view.copy_from_slice(raw);
            }
            queue.submit([]);
            host.push(t0.elapsed().as_secs_f64());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            total.push(t0.elapsed().as_secs_f64());
        }
        report("write_buffer_with", host, total);
        // 2b: GpuContext::write_finite (write_buffer_with, checking each run as it copies).
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            ctx.write_finite(&target, &data, "x").unwrap();
            queue.submit([]);
            host.push(t0.elapsed().as_secs_f64());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            total.push(t0.elapsed().as_secs_f64());
        }
        report("write_finite", host, total);
        // 3: a staging belt (MAP_WRITE buffers kept and reused).
        let mut belt = wgpu::util::StagingBelt::new(device.clone(), bytes as u64);
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            let mut encoder = device.create_command_encoder(&Default::default());
            belt.write_buffer(
                &mut encoder,
                &target,
                0,
                std::num::NonZeroU64::new(bytes as u64).unwrap(),
            )
            .copy_from_slice(raw);
            belt.finish();
            queue.submit([encoder.finish()]);
            belt.recall();
            host.push(t0.elapsed().as_secs_f64());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            total.push(t0.elapsed().as_secs_f64());
        }
        report("staging belt", host, total);
        // 4: a MAP_WRITE buffer mapped once, written, unmapped, copied (no allocation).
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("probe staging"),
            size: bytes as u64,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
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
            host.push(t0.elapsed().as_secs_f64());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            total.push(t0.elapsed().as_secs_f64());
        }
        report("mapped MAP_WRITE", host, total);
        // 5: the write alone into a mapped MAP_WRITE buffer (the memory's write speed).
        let (mut host, mut total) = (vec![], vec![]);
        for _ in 0..reps {
            let t0 = Instant::now();
            staging
                .slice(..)
                .get_mapped_range_mut()
                .unwrap()
                .copy_from_slice(raw);
            host.push(t0.elapsed().as_secs_f64());
            total.push(t0.elapsed().as_secs_f64());
        }
        report("write into mapping", host, total);
        staging.unmap();
    }
}
