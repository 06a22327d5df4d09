//! Which learning-rate strategy converges fastest and best? One model (the digits classifier),
//! one budget of 600 updates, ten schedules. Prints final training loss, validation accuracy
//! and the updates needed to bring the training loss (mean of the last 20) under a target,
//! and plots every loss curve in `compare_schedules.png`.
//!
//!     cargo run --release --example compare_schedules

use std::path::Path;

use kiln::run::{Run, RunConfig};
use kiln::{AdapterOptions, Device, DeviceChoice};
use kiln_cli::plot::{Panel, Series, plot};

const RUN: &str = r#"
[model]
layers = [{ dense = 64 }, "relu", { dense = 10 }]
loss = "cross_entropy"
[data]
source = "digits"
validation = 0.2
normalize = "standard"
[optimizer]
lr = 0.05
momentum = 0.9
[train]
steps = 600
batch_size = 64
"#;

const TARGET: f32 = 0.05;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (device, why) = Device::select(DeviceChoice::Auto, &AdapterOptions::from_env())?;
    println!("{why}");
    let schedules = [
        ("fixed", "kind = \"fixed\""),
        ("step", "kind = \"step\"\nstep_size = 200\ngamma = 0.3"),
        ("exponential", "kind = \"exponential\"\ngamma = 0.995"),
        ("inverse_sqrt", "kind = \"inverse_sqrt\"\ngamma = 0.05"),
        ("cosine", "kind = \"cosine_annealing\"\nt_max = 600"),
        (
            "warmup+cosine",
            "kind = \"warmup\"\nsteps = 50\nstart_factor = 0.1\nthen = { kind = \"cosine_annealing\", t_max = 550 }",
        ),
        (
            "one_cycle",
            "kind = \"one_cycle\"\nmax_lr = 0.2\ntotal_steps = 600",
        ),
        (
            "cyclic",
            "kind = \"cyclic\"\nbase_lr = 0.005\nmax_lr = 0.1\nstep_size_up = 100\nmode = \"triangular2\"",
        ),
        (
            "reduce_on_plateau",
            "kind = \"reduce_on_plateau\"\npatience = 20\nfactor = 0.5\nthreshold = 0.05",
        ),
        (
            "bold_driver",
            "kind = \"bold_driver\"\ndecrease = 0.7\nincrease = 1.02\nmax_lr = 0.2",
        ),
    ];
    println!(
        "{:<20} {:>12} {:>12} {:>22}",
        "schedule",
        "final loss",
        "val. acc.",
        format!("updates to loss < {TARGET}")
    );
    let mut curves = Vec::new();
    for (name, schedule) in schedules {
        let config = RunConfig::from_toml(&format!("{RUN}[schedule]\n{schedule}\n"), name)?;
        let mut run = Run::new(config, Path::new("."), &device, None, None)?;
        while !run.finished() {
            run.step()?;
        }
        let losses = run.trainer.losses()?.to_vec();
        let smooth: Vec<f32> = (0..losses.len())
            .map(|t| {
                let w = &losses[t.saturating_sub(19)..=t];
                w.iter().sum::<f32>() / w.len() as f32
            })
            .collect();
        let reached = smooth
            .iter()
            .position(|&l| l < TARGET)
            .map_or("never".into(), |t| (t + 1).to_string());
        let eval = run.evaluate()?.expect("a validation split");
        println!(
            "{name:<20} {:>12.4} {:>11.2}% {reached:>22}",
            smooth[smooth.len() - 1],
            100.0 * eval.accuracy.unwrap_or(0.0)
        );
        curves.push(Series::over_updates(name, smooth.iter().map(|&l| l as f64)));
    }
    let panel = Panel {
        title: "digits: training loss (mean of last 20) under ten schedules".into(),
        y_label: "loss".into(),
        series: curves,
        log_y: true,
    };
    plot(Path::new("compare_schedules.png"), &[panel])?;
    println!("wrote compare_schedules.png");
    Ok(())
}
