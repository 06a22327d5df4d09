//! The digits classifier (64 → 64 relu → 10, SGD with momentum, warmup + cosine) trained on the
//! GPU and on the CPU device from the same initial weights, and the two runs compared: they
//! should agree to float rounding.
//!
//!     cargo run --release --example digits_mlp

use std::path::Path;
use std::time::Instant;

use kiln::run::{Run, RunConfig};
use kiln::{AdapterOptions, Device, DeviceChoice};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match Device::select(DeviceChoice::Gpu, &AdapterOptions::from_env()) {
        Ok((device, why)) => {
            println!("{why}");
            Some(device)
        }
        Err(e) => {
            println!("no GPU ({e}); training on the CPU device only");
            None
        }
    };
    let mut results = Vec::new();
    for device in gpu.iter().chain([&Device::Cpu]) {
        let mut run = Run::new(RunConfig::default_run(), Path::new("."), device, None, None)?;
        let started = Instant::now();
        while !run.finished() {
            run.step()?;
        }
        let losses = run.trainer.losses()?.to_vec();
        let seconds = started.elapsed().as_secs_f64();
        let eval = run.evaluate()?.expect("the default run holds out a fifth");
        println!(
            "{:<45} {} updates in {seconds:6.2} s   final training loss {:.4}   validation loss {:.4}   accuracy {:.2}%",
            device.name(),
            losses.len(),
            losses[losses.len() - 1],
            eval.loss,
            100.0 * eval.accuracy.unwrap_or(0.0)
        );
        results.push((losses, run.trainer.parameters()?));
    }
    if let [(gpu_losses, gpu_params), (cpu_losses, cpu_params)] = &results[..] {
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        println!(
            "largest difference, GPU vs CPU: loss curve {:.2e}, parameters {:.2e}",
            max_diff(gpu_losses, cpu_losses),
            max_diff(gpu_params, cpu_params)
        );
    }
    Ok(())
}
