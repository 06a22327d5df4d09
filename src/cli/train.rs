//! `kiln train`: the bundled digits classifier.

use std::time::Instant;

use anyhow::{Context, Result};
use kiln::data::Dataset;
use kiln::schedule::{Kind, Scheduler};
use kiln::train::TrainOptions;
use kiln::{Activation, Device, Layer, Loss, Sequential, SgdOptions, Targets, Trainer};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::TrainArgs;

pub fn train(args: &TrainArgs) -> Result<()> {
    let (device, why) = Device::select(args.device, &args.adapter.options())?;
    if !args.quiet {
        println!("{why}");
    }
    let data = Dataset::digits()?;
    let (mut train_set, mut val_set) = data.split(0.2, args.seed)?;
    let (mean, std) = train_set.feature_stats();
    train_set.standardize(&mean, &std);
    val_set.standardize(&mean, &std);

    let model = Sequential::new(
        data.features,
        vec![
            Layer::Dense { out: 64 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: data.classes },
        ],
        Loss::CrossEntropy,
    )?;
    let options = TrainOptions {
        sgd: SgdOptions {
            momentum: 0.9,
            ..Default::default()
        },
        max_batch: args.batch_size.min(train_set.rows()).max(1),
        seed: args.seed,
        ..Default::default()
    };
    let cosine = Kind::CosineAnnealing {
        t_max: args.steps.max(1) as u64,
        eta_min: 0.0,
    };
    let schedule = Scheduler::from_kind(args.lr, cosine)?;
    let mut trainer = Trainer::new(&device, model, options, schedule)?;
    if !args.quiet {
        println!(
            "training digits: {} train / {} validation rows, 64→64 relu→10, SGD momentum 0.9, cosine lr {} over {} steps, batch {}",
            train_set.rows(),
            val_set.rows(),
            args.lr,
            args.steps,
            options.max_batch
        );
    }

    let f = train_set.features;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let mut order: Vec<usize> = (0..train_set.rows()).collect();
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let report_every = (args.steps / 10).max(1);
    let mut step = 0;
    'epochs: for _epoch in 0.. {
        order.shuffle(&mut rng);
        for batch in order.chunks(options.max_batch) {
            if step == args.steps {
                break 'epochs;
            }
            xb.clear();
            yb.clear();
            for &r in batch {
                xb.extend_from_slice(&train_set.x[r * f..(r + 1) * f]);
                yb.push(train_set.labels[r]);
            }
            let lr = trainer.step(&xb, Targets::Classes(&yb))?;
            step += 1;
            if !args.quiet && (step % report_every == 0 || step == args.steps) {
                // One bulk read-back of the losses recorded since the last report.
                let losses = trainer.losses()?;
                let recent = &losses[losses.len().saturating_sub(report_every)..];
                let mean_loss = recent.iter().sum::<f32>() / recent.len() as f32;
                println!(
                    "step {step:>6}/{}  loss {mean_loss:.4}  lr {lr:.5}",
                    args.steps
                );
            }
        }
        if args.steps == 0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let logits = trainer
        .predict(&val_set.x)
        .context("evaluating on the validation set")?;
    let (val_loss, _) = Device::Cpu.loss(
        Loss::CrossEntropy,
        &logits,
        Targets::Classes(&val_set.labels),
        data.classes,
    )?;
    let correct = logits
        .chunks(data.classes)
        .zip(&val_set.labels)
        .filter(|(row, l)| argmax(row) == **l as usize)
        .count();
    if !args.quiet {
        println!(
            "{step} steps in {elapsed:.2} s ({:.0} steps/s) on {}",
            step as f64 / elapsed,
            device.name()
        );
    }
    println!(
        "validation: loss {val_loss:.4}, accuracy {:.2}% ({correct}/{})",
        100.0 * correct as f64 / val_set.rows() as f64,
        val_set.rows()
    );
    Ok(())
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap_or(0)
}
