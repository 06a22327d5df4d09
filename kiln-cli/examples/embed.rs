//! Kiln inside a Rust program: build a model in code, train it, predict. (XOR, 2 → 8 → 2.)
use kiln::optim::{Optimizer, Sgd};
use kiln::schedule::{Kind, Scheduler};
use kiln::train::TrainOptions;
use kiln::{
    Activation, AdapterOptions, Device, DeviceChoice, Layer, Loss, Sequential, Targets, Trainer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A hardware GPU if there is one, else the CPU device; `why` says which.
    let (device, why) = Device::select(DeviceChoice::Auto, &AdapterOptions::from_env())?;
    println!("{why}");

    let layers = vec![
        Layer::Dense { out: 8 },
        Layer::Activation(Activation::Tanh),
        Layer::Dense { out: 2 },
    ];
    let model = Sequential::new(2, layers, Loss::CrossEntropy)?;
    // torch.optim.SGD(momentum=0.9); any optimizer of kiln::optim goes here (Adam::adamw(), …).
    let sgd = Optimizer::new(Sgd {
        momentum: 0.9,
        ..Default::default()
    })?;
    let options = TrainOptions {
        optimizer: sgd,
        max_batch: 4,
        seed: 1,
        ..Default::default()
    };
    let schedule = Scheduler::from_kind(
        0.5,
        Kind::CosineAnnealing {
            t_max: 300,
            eta_min: 0.01,
        },
    )?;
    let mut trainer = Trainer::new(&device, model, options, schedule)?;

    let x = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let labels = [0, 1, 1, 0];
    for _ in 0..300 {
        trainer.step(&x, Targets::Classes(&labels))?; // no read-back inside the loop
    }
    let losses = trainer.losses()?; // every update's loss, read back once
    println!("loss: {:.4} → {:.4}", losses[0], losses[losses.len() - 1]);

    let logits = trainer.predict(&x)?;
    for (row, pair) in logits.chunks(2).enumerate() {
        let class = if pair[1] > pair[0] { 1 } else { 0 };
        println!(
            "{:?} → {class} (want {})",
            &x[2 * row..2 * row + 2],
            labels[row]
        );
    }
    Ok(())
}
