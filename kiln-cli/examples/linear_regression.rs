//! Linear regression by gradient descent on the diabetes data (442 patients, 10 features,
//! disease progression after a year), under three learning-rate schedules side by side:
//! fixed, exponential decay and step decay. Prints a table of losses and writes
//! `linear_regression.png`.
//!
//!     cargo run --release --example linear_regression

use std::path::Path;

use kiln::run::{Run, RunConfig};
use kiln::{AdapterOptions, Device, DeviceChoice};
use kiln_cli::plot::{Panel, Series, plot};

/// One dense layer with no activation is linear regression; full-batch updates (the batch is
/// larger than the data) make it plain gradient descent. The target is in the hundreds, so
/// the MSE starts in the tens of thousands.
const RUN: &str = r#"
[model]
layers = [{ dense = 1 }]
loss = "mse"
[data]
source = "diabetes"
validation = 0.2
normalize = "standard"
[optimizer]
lr = 0.1
[train]
steps = 300
batch_size = 1000
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (device, why) = Device::select(DeviceChoice::Auto, &AdapterOptions::from_env())?;
    println!("{why}");
    let schedules = [
        ("fixed", "kind = \"fixed\""),
        (
            "exponential (γ = 0.99)",
            "kind = \"exponential\"\ngamma = 0.99",
        ),
        (
            "step (÷2 every 75)",
            "kind = \"step\"\nstep_size = 75\ngamma = 0.5",
        ),
    ];
    let mut curves = Vec::new();
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>14}",
        "schedule", "loss @10", "loss @100", "loss @300", "validation"
    );
    for (name, schedule) in schedules {
        let config = RunConfig::from_toml(&format!("{RUN}[schedule]\n{schedule}\n"), name)?;
        let mut run = Run::new(config, Path::new("."), &device, None, None)?;
        while !run.finished() {
            run.step()?;
        }
        let losses = run.trainer.losses()?.to_vec();
        let val = run.evaluate()?.expect("a validation split");
        println!(
            "{name:<24} {:>12.1} {:>12.1} {:>12.1} {:>14.1}",
            losses[9], losses[99], losses[299], val.loss
        );
        curves.push(Series::over_updates(name, losses.iter().map(|&l| l as f64)));
    }
    let panel = Panel {
        title: "diabetes: linear regression, MSE".into(),
        y_label: "training loss".into(),
        series: curves,
        log_y: true,
    };
    plot(Path::new("linear_regression.png"), &[panel])?;
    println!("wrote linear_regression.png");
    Ok(())
}
