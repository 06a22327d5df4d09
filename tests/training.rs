//! A small MLP trains on a fixed synthetic task on every device, and the GPU's training run
//! follows the CPU's step for step.

mod common;

use std::sync::Arc;

use kiln::schedule::{Kind, Scheduler};
use kiln::train::TrainOptions;
use kiln::{Activation, Device, Layer, Loss, Sequential, Targets, Trainer};

/// 200 points in [−1, 1)⁴, labelled by the largest of three fixed linear scores: a
/// separable 3-class problem an MLP should nearly solve.
fn task() -> (Vec<f32>, Vec<u32>) {
    let x = common::random(200 * 4, -1.0, 1.0, 42);
    let w = [
        [1.0, -0.5, 0.25, 0.0],
        [-0.5, 1.0, 0.0, 0.5],
        [0.0, 0.25, -1.0, 1.0],
    ];
    let labels = x
        .chunks(4)
        .map(|row| {
            let score = |c: usize| (0..4).map(|j| w[c][j] * row[j]).sum::<f32>();
            (0..3)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap() as u32
        })
        .collect();
    (x, labels)
}

fn classifier() -> Sequential {
    Sequential::new(
        4,
        vec![
            Layer::Dense { out: 16 },
            Layer::Activation(Activation::Tanh),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap()
}

const BATCH: usize = 32;

fn options() -> TrainOptions {
    TrainOptions {
        optimizer: kiln::Optimizer::new(kiln::optim::Sgd {
            momentum: 0.9,
            ..Default::default()
        })
        .unwrap(),
        max_batch: BATCH,
        seed: 7,
        ..Default::default()
    }
}

/// Runs `steps` updates over the data in order, batch t being rows [(t mod nb)·B, +B) with a
/// smaller last batch (200 = 6·32 + 8), like a DataLoader without shuffling.
/// Returns the rate each update used.
fn train(trainer: &mut Trainer, x: &[f32], labels: &[u32], steps: usize) -> Vec<f64> {
    let batches = labels.len().div_ceil(BATCH);
    (0..steps)
        .map(|t| {
            let start = (t % batches) * BATCH;
            let end = (start + BATCH).min(labels.len());
            trainer
                .step(
                    &x[start * 4..end * 4],
                    Targets::Classes(&labels[start..end]),
                )
                .unwrap()
        })
        .collect()
}

fn loss_falls(device: &Device) {
    let (x, labels) = task();
    let schedule = Scheduler::from_kind(
        0.1,
        Kind::CosineAnnealing {
            t_max: 300,
            eta_min: 0.0,
        },
    )
    .unwrap();
    let mut trainer = Trainer::new(device, classifier(), options(), schedule).unwrap();
    train(&mut trainer, &x, &labels, 300);
    let losses = trainer.losses().unwrap().to_vec();
    assert_eq!(losses.len(), 300);
    assert!(
        losses[0] > 0.9,
        "initial loss {} (ln 3 ≈ 1.1 expected)",
        losses[0]
    );
    let last_epoch: f32 = losses[losses.len() - 7..].iter().sum::<f32>() / 7.0;
    assert!(
        last_epoch < 0.15,
        "loss did not fall below 0.15: last epoch mean {last_epoch}"
    );

    let logits = trainer.predict(&x).unwrap();
    let correct = logits
        .chunks(3)
        .zip(&labels)
        .filter(|(row, l)| (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32 == **l)
        .count();
    assert!(correct >= 190, "training accuracy {correct}/200");
}
test_device!(mlp_loss_falls_below_bound, super::loss_falls);

#[test]
fn gpu_and_cpu_loss_curves_agree_for_50_steps() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let (x, labels) = task();
    let mut runs = Vec::new();
    for device in [Device::Cpu, gpu] {
        let schedule = Scheduler::fixed(0.1).unwrap();
        let mut trainer = Trainer::new(&device, classifier(), options(), schedule).unwrap();
        train(&mut trainer, &x, &labels, 50);
        runs.push((
            trainer.losses().unwrap().to_vec(),
            trainer.parameters().unwrap(),
        ));
    }
    let (cpu, gpu) = (&runs[0], &runs[1]);
    common::assert_close("loss curve", &gpu.0, &cpu.0, common::LOSS_CURVE);
    common::assert_close(
        "parameters after 50 steps",
        &gpu.1,
        &cpu.1,
        common::LOSS_CURVE,
    );
}

/// Batches of several parts of the bias gradient's sum (70 rows: three parts of
/// `ROWS_PER_PART`, summed in two passes) and batches of one part in a step recorded for
/// two passes: the GPU follows the CPU, losses and parameters.
#[test]
fn batches_of_several_bias_parts_train_alike_on_gpu_and_cpu() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let (x, labels) = task();
    let max_batch = 70;
    assert!(max_batch > 2 * kiln::cpu::bias::ROWS_PER_PART);
    let mut runs = Vec::new();
    for device in [Device::Cpu, gpu] {
        let opts = TrainOptions {
            max_batch,
            ..options()
        };
        let schedule = Scheduler::fixed(0.1).unwrap();
        let mut trainer = Trainer::new(&device, classifier(), opts, schedule).unwrap();
        let mut start = 0;
        for batch in [70, 20, 70, 5, 33, 2] {
            let end = start + batch;
            trainer
                .step(
                    &x[start * 4..end * 4],
                    Targets::Classes(&labels[start..end]),
                )
                .unwrap();
            start = end % 100;
        }
        runs.push((
            trainer.losses().unwrap().to_vec(),
            trainer.parameters().unwrap(),
        ));
    }
    let (cpu, gpu) = (&runs[0], &runs[1]);
    common::assert_close("losses", &gpu.0, &cpu.0, common::LOSS_CURVE);
    common::assert_close("parameters", &gpu.1, &cpu.1, common::LOSS_CURVE);
}

/// Every activation between two dense layers, and every loss, through the whole training
/// program: the GPU's losses and parameters follow the CPU's for 10 steps.
#[test]
fn every_activation_and_loss_trains_alike_on_gpu_and_cpu() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let rows = 19;
    let x = common::random(rows * 5, -1.0, 1.0, 3);
    let labels = common::random_labels(rows, 3, 4);
    let values = common::random(rows * 3, -1.0, 1.0, 5);
    let probs = common::random(rows * 3, 0.0, 1.0, 6);
    let mut acts = Activation::ALL.to_vec();
    acts.push(Activation::LeakyRelu(0.2));
    for loss in Loss::ALL {
        for &act in &acts {
            let mut layers = vec![
                Layer::Dense { out: 7 },
                Layer::Activation(act),
                Layer::Dense { out: 3 },
            ];
            if loss == Loss::Bce {
                layers.push(Layer::Activation(Activation::Sigmoid));
            }
            let model = Sequential::new(5, layers, loss).unwrap();
            let targets = match loss {
                Loss::CrossEntropy => Targets::Classes(&labels),
                Loss::Bce | Loss::BceWithLogits => Targets::Values(&probs),
                _ => Targets::Values(&values),
            };
            let opts = TrainOptions {
                optimizer: kiln::Optimizer::new(kiln::optim::Sgd {
                    momentum: 0.5,
                    weight_decay: 0.01,
                    ..Default::default()
                })
                .unwrap(),
                max_batch: rows,
                seed: 11,
                ..Default::default()
            };
            let mut runs = Vec::new();
            for device in [&Device::Cpu, &gpu] {
                let schedule = Scheduler::fixed(0.05).unwrap();
                let mut trainer =
                    Trainer::new(device, model.clone(), opts.clone(), schedule).unwrap();
                for _ in 0..10 {
                    trainer.step(&x, targets).unwrap();
                }
                runs.push((
                    trainer.losses().unwrap().to_vec(),
                    trainer.parameters().unwrap(),
                ));
            }
            let what = format!("{} with {}", loss.name(), act.name());
            common::assert_close(
                &format!("{what}: losses"),
                &runs[1].0,
                &runs[0].0,
                common::LOSS_CURVE,
            );
            common::assert_close(
                &format!("{what}: parameters"),
                &runs[1].1,
                &runs[0].1,
                common::LOSS_CURVE,
            );
        }
    }
}

fn losses_survive_history_wraparound(device: &Device) {
    // More steps than the GPU loss history holds: every loss must still come back, in order.
    let (x, labels) = task();
    let schedule = Scheduler::fixed(0.0).unwrap();
    let mut trainer = Trainer::new(device, classifier(), options(), schedule).unwrap();
    let steps = kiln::train::LOSS_HISTORY + 10;
    for _ in 0..steps {
        trainer
            .step(&x[..BATCH * 4], Targets::Classes(&labels[..BATCH]))
            .unwrap();
    }
    let losses = trainer.losses().unwrap();
    assert_eq!(losses.len(), steps);
    // lr = 0: the weights never move, so every loss is the first one.
    assert!(
        losses.iter().all(|&l| l == losses[0]),
        "losses differ with lr = 0"
    );
}
test_device!(every_loss_is_kept, super::losses_survive_history_wraparound);

fn scheduler(toml: &str) -> Scheduler {
    kiln::schedule::ScheduleConfig::from_toml(toml)
        .and_then(|c| c.build(Some(0.1)))
        .unwrap()
}

/// Update u uses the rate the schedule gives after observing updates ..u−2: exactly
/// lr/(1 + β·loss[u−2]) for loss_adaptive, on every device.
fn observations_arrive_one_update_late(device: &Device) {
    let (x, labels) = task();
    let schedule = scheduler("kind = \"loss_adaptive\"\nbeta = 2");
    let mut trainer = Trainer::new(device, classifier(), options(), schedule).unwrap();
    let mut rates = Vec::new();
    for t in 0..12 {
        let start = (t % 6) * BATCH;
        let rows = start..start + BATCH;
        rates.push(
            trainer
                .step(
                    &x[rows.start * 4..rows.end * 4],
                    Targets::Classes(&labels[rows]),
                )
                .unwrap(),
        );
    }
    let losses = trainer.losses().unwrap().to_vec();
    assert_eq!(rates[0], 0.1);
    assert_eq!(rates[1], 0.1);
    for u in 2..12 {
        assert_eq!(
            rates[u],
            0.1 / (1.0 + 2.0 * losses[u - 2] as f64),
            "update {u}"
        );
    }
}
test_device!(
    observations_reach_the_schedule_one_update_late,
    super::observations_arrive_one_update_late
);

/// With momentum 0 and lr 1, an update moves the parameters by exactly the clipped gradient,
/// whose norm is at most max_norm.
fn clipping_bounds_the_update(device: &Device) {
    let (x, labels) = task();
    let opts = TrainOptions {
        clip_grad_norm: Some(0.05),
        optimizer: Default::default(),
        ..options()
    };
    let mut trainer =
        Trainer::new(device, classifier(), opts, Scheduler::fixed(1.0).unwrap()).unwrap();
    let before = trainer.parameters().unwrap();
    trainer
        .step(&x[..BATCH * 4], Targets::Classes(&labels[..BATCH]))
        .unwrap();
    let after = trainer.parameters().unwrap();
    let moved: f32 = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    assert!(
        moved <= 0.05 * (1.0 + 1e-4),
        "update norm {moved} > max_norm 0.05"
    );
    assert!(
        moved >= 0.05 * 0.99,
        "update norm {moved}: the gradient should have been clipped"
    );
}
test_device!(
    clip_grad_norm_bounds_the_update,
    super::clipping_bounds_the_update
);

#[test]
fn observation_driven_schedules_and_clipping_train_alike_on_gpu_and_cpu() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let (x, labels) = task();
    let configs = [
        "kind = \"grad_norm_adaptive\"\nbeta = 0.5",
        "kind = \"loss_adaptive\"\nbeta = 1",
        "kind = \"reduce_on_plateau\"\npatience = 1\nfactor = 0.5\nthreshold = 0.05",
        "kind = \"chained\"\nschedules = [{ kind = \"cosine_annealing\", t_max = 40 }, { kind = \"loss_milestones\", thresholds = [0.8, 0.5] }]",
    ];
    for config in configs {
        let mut runs = Vec::new();
        for device in [&Device::Cpu, &gpu] {
            let opts = TrainOptions {
                clip_grad_norm: Some(1.0),
                ..options()
            };
            let mut trainer = Trainer::new(device, classifier(), opts, scheduler(config)).unwrap();
            let rates: Vec<f32> = train(&mut trainer, &x, &labels, 40)
                .into_iter()
                .map(|r| r as f32)
                .collect();
            runs.push((
                rates,
                trainer.losses().unwrap().to_vec(),
                trainer.parameters().unwrap(),
            ));
        }
        common::assert_close(
            &format!("{config}: rates"),
            &runs[1].0,
            &runs[0].0,
            common::LOSS_CURVE,
        );
        common::assert_close(
            &format!("{config}: losses"),
            &runs[1].1,
            &runs[0].1,
            common::LOSS_CURVE,
        );
        common::assert_close(
            &format!("{config}: parameters"),
            &runs[1].2,
            &runs[0].2,
            common::LOSS_CURVE,
        );
    }
}

/// With skipping on, an update whose loss is not finite leaves every parameter alone (the
/// SGD kernel checks the loss on the device); a finite one still updates.
fn non_finite_updates_are_skipped(device: &Device) {
    let model = Sequential::new(2, vec![Layer::Dense { out: 1 }], Loss::Mse).unwrap();
    let opts = TrainOptions {
        max_batch: 2,
        optimizer: kiln::Optimizer::new(kiln::optim::Sgd {
            momentum: 0.9,
            ..Default::default()
        })
        .unwrap(),
        ..Default::default()
    };
    let mut trainer = Trainer::new(device, model, opts, Scheduler::fixed(0.1).unwrap()).unwrap();
    trainer.skip_non_finite_losses(true);
    let before = trainer.parameters().unwrap();
    trainer
        .step(&[1e30, 1e30, -1e30, 1e30], Targets::Values(&[1.0, 0.0]))
        .unwrap();
    assert!(!trainer.losses().unwrap()[0].is_finite());
    assert_eq!(
        trainer.parameters().unwrap(),
        before,
        "a skipped update changed the parameters"
    );
    trainer
        .step(&[0.5, 0.25, -0.5, 1.0], Targets::Values(&[1.0, 0.0]))
        .unwrap();
    assert_ne!(trainer.parameters().unwrap(), before);
}
test_device!(
    non_finite_losses_can_be_skipped,
    super::non_finite_updates_are_skipped
);

/// With skipping on, an observation-driven schedule is not derailed by a skipped update: it
/// sees the last finite loss in place of the infinite one, and training goes on.
fn skipped_updates_do_not_steer_the_schedule(device: &Device) {
    let model = Sequential::new(2, vec![Layer::Dense { out: 1 }], Loss::Mse).unwrap();
    let opts = TrainOptions {
        max_batch: 2,
        ..Default::default()
    };
    let schedule = scheduler("kind = \"loss_adaptive\"\nbeta = 1");
    let mut trainer = Trainer::new(device, model, opts, schedule).unwrap();
    trainer.skip_non_finite_losses(true);
    let (good, bad) = ([0.5, 0.25, -0.5, 1.0], [1e30, 1e30, -1e30, 1e30]);
    let y = [1.0, 0.0];
    let mut rates = Vec::new();
    for x in [&good, &bad, &good, &good, &good] {
        rates.push(trainer.step(x, Targets::Values(&y)).unwrap());
    }
    let losses = trainer.losses().unwrap().to_vec();
    assert!(!losses[1].is_finite());
    // Update 3 would have used loss[1]; it uses loss[0], the last finite one, instead.
    assert_eq!(rates[3], 0.1 / (1.0 + losses[0] as f64));
    assert_eq!(rates[4], 0.1 / (1.0 + losses[2] as f64));
}
test_device!(
    skipped_updates_leave_the_schedule_alone,
    super::skipped_updates_do_not_steer_the_schedule
);

/// Without skipping, a schedule that follows the loss cannot step on one that is not finite:
/// the update that would read it fails, naming the update whose loss it was, and changes
/// nothing.
fn a_followed_loss_that_is_not_finite_is_named(device: &Device) {
    let model = Sequential::new(2, vec![Layer::Dense { out: 1 }], Loss::Mse).unwrap();
    let opts = TrainOptions {
        max_batch: 2,
        ..Default::default()
    };
    let schedule = scheduler("kind = \"loss_adaptive\"\nbeta = 1");
    let mut trainer = Trainer::new(device, model, opts, schedule).unwrap();
    let (good, bad) = ([0.5, 0.25, -0.5, 1.0], [1e30, 1e30, -1e30, 1e30]);
    let y = [1.0, 0.0];
    for x in [&good, &bad] {
        trainer.step(x, Targets::Values(&y)).unwrap();
    }
    // The schedule reads each update's loss one update late: update 1's, at update 3.
    trainer.step(&good, Targets::Values(&y)).unwrap();
    let before = trainer.parameters().unwrap();
    let e = trainer
        .step(&good, Targets::Values(&y))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the loss of update 1, which the schedule follows, is inf")
            && e.contains("training diverged"),
        "{e}"
    );
    assert_eq!(trainer.steps(), 3);
    // Bit for bit: update 1's step made them NaN.
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(trainer.parameters().unwrap()), bits(before.clone()));
    // Asked again, the same answer on every device (the GPU once lost the number it read).
    let again = trainer
        .step(&good, Targets::Values(&y))
        .unwrap_err()
        .to_string();
    assert_eq!(again, e);
    assert_eq!(trainer.steps(), 3);
    assert_eq!(bits(trainer.parameters().unwrap()), bits(before));
}
test_device!(
    a_followed_loss_that_is_not_finite_fails_the_update,
    super::a_followed_loss_that_is_not_finite_is_named
);

/// Batches gathered from data loaded on the device (`load_data`, `set_order`, `step_data`)
/// train exactly as the same batches given from the host: every loss and parameter equal to
/// the bit, for class labels and for values, a short last batch and a second order included.
fn resident_data_trains_like_host_batches(device: &Device) {
    let rows = 23;
    let x = common::random(rows * 5, -1.0, 1.0, 31);
    let labels = common::random_labels(rows, 3, 32);
    let values = common::random(rows * 3, -1.0, 1.0, 33);
    let orders: [Vec<u32>; 2] = [
        (0..rows as u32).rev().collect(),
        (0..rows as u32).map(|r| (r * 7) % rows as u32).collect(),
    ];
    for loss in [Loss::CrossEntropy, Loss::Mse] {
        let model = Sequential::new(
            5,
            vec![
                Layer::Dense { out: 6 },
                Layer::Activation(Activation::Tanh),
                Layer::Dense { out: 3 },
            ],
            loss,
        )
        .unwrap();
        let opts = TrainOptions {
            max_batch: 8,
            ..options()
        };
        let new = || {
            Trainer::new(
                device,
                model.clone(),
                opts.clone(),
                Scheduler::fixed(0.05).unwrap(),
            )
            .unwrap()
        };
        let (mut host, mut resident) = (new(), new());
        let all = match loss {
            Loss::CrossEntropy => Targets::Classes(&labels),
            _ => Targets::Values(&values),
        };
        resident.load_data(&x, all).unwrap();
        for order in &orders {
            resident.set_order(order).unwrap();
            for start in (0..rows).step_by(8) {
                let n = (rows - start).min(8);
                let picked: Vec<usize> = order[start..start + n]
                    .iter()
                    .map(|&r| r as usize)
                    .collect();
                let xb: Vec<f32> = picked
                    .iter()
                    .flat_map(|&r| x[r * 5..r * 5 + 5].to_vec())
                    .collect();
                let lb: Vec<u32> = picked.iter().map(|&r| labels[r]).collect();
                let vb: Vec<f32> = picked
                    .iter()
                    .flat_map(|&r| values[r * 3..r * 3 + 3].to_vec())
                    .collect();
                let tb = match loss {
                    Loss::CrossEntropy => Targets::Classes(&lb),
                    _ => Targets::Values(&vb),
                };
                host.step(&xb, tb).unwrap();
                resident.step_data(start, n).unwrap();
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(host.losses().unwrap()),
            bits(resident.losses().unwrap()),
            "{loss:?}"
        );
        assert_eq!(
            bits(&host.parameters().unwrap()),
            bits(&resident.parameters().unwrap()),
            "{loss:?}"
        );
        // Misuse is an error naming what is wrong.
        let e = resident.step_data(20, 8).unwrap_err().to_string();
        assert!(e.contains("rows 20..20+8"), "{e}");
        let e = resident.set_order(&[0, 23]).unwrap_err().to_string();
        assert!(e.contains("entry 1 is row 23"), "{e}");
        let e = new().step_data(0, 1).unwrap_err().to_string();
        assert!(e.contains("order of 0 entries"), "{e}");
    }
}
test_device!(
    resident_data_matches_host_batches,
    super::resident_data_trains_like_host_batches
);

/// Updates from loaded data queued and submitted several at a time give what one submission
/// per update gives, to the bit: losses, parameters and optimizer state, with reads, writes,
/// host batches, a new order, short batches and the loss history filling between queued
/// updates. Adam's scalars and clipping make every queued update's uniforms differ.
fn queued_updates_match_one_per_submit(device: &Device) {
    let rows = 37;
    let x = common::random(rows * 5, -1.0, 1.0, 41);
    let labels = common::random_labels(rows, 3, 42);
    let model = Sequential::new(
        5,
        vec![
            Layer::Dense { out: 7 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let opts = TrainOptions {
        optimizer: kiln::Optimizer::new(kiln::optim::Adam::default()).unwrap(),
        max_batch: 8,
        clip_grad_norm: Some(0.5),
        ..options()
    };
    let schedule = || {
        Scheduler::from_kind(
            0.01,
            Kind::CosineAnnealing {
                t_max: 300,
                eta_min: 0.0,
            },
        )
        .unwrap()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |steps_per_submit: usize| {
        let mut t = Trainer::new(device, model.clone(), opts.clone(), schedule()).unwrap();
        t.set_steps_per_submit(steps_per_submit).unwrap();
        t.load_data(&x, Targets::Classes(&labels)).unwrap();
        let mut seen = Vec::new();
        // More updates than the loss history holds, in epochs of 5 batches (the last of 5 rows).
        let updates = kiln::train::LOSS_HISTORY + 40;
        for u in 0..updates {
            let (epoch, batch) = (u / 5, u % 5);
            if batch == 0 {
                let order: Vec<u32> = (0..rows as u32)
                    .map(|r| (r * (2 * epoch as u32 + 1) + epoch as u32) % rows as u32)
                    .collect();
                t.set_order(&order).unwrap();
            }
            let start = batch * 8;
            t.step_data(start, (rows - start).min(8)).unwrap();
            // Between queued updates: reads, writes and a host batch.
            match u {
                7 => seen.push(t.parameters().unwrap()),
                11 => seen.push(t.predict(&x[..3 * 5]).unwrap()),
                13 => {
                    let mut p = t.parameters().unwrap();
                    p[0] += 0.25;
                    t.set_parameters(&p).unwrap();
                }
                17 => {
                    t.step(&x[..6 * 5], Targets::Classes(&labels[..6])).unwrap();
                }
                23 => seen.push(t.losses().unwrap().to_vec()),
                29 => {
                    let state = t.state().unwrap();
                    seen.push(state.params);
                    seen.extend(state.optimizer.blocks.into_iter().map(|(_, b)| b));
                }
                _ => {}
            }
        }
        seen.push(t.losses().unwrap().to_vec());
        seen.push(t.parameters().unwrap());
        let state = t.state().unwrap();
        seen.extend(state.optimizer.blocks.into_iter().map(|(_, b)| b));
        seen.iter().map(|v| bits(v)).collect::<Vec<_>>()
    };
    let one = run(1);
    for n in [3, 16, kiln::train::MAX_STEPS_PER_SUBMIT] {
        assert_eq!(run(n), one, "{n} updates per submission");
    }
    let mut t = Trainer::new(device, model.clone(), opts.clone(), schedule()).unwrap();
    for n in [0, kiln::train::MAX_STEPS_PER_SUBMIT + 1] {
        let e = t.set_steps_per_submit(n).unwrap_err().to_string();
        assert!(e.contains("steps_per_submit"), "{e}");
    }
}
test_device!(
    queued_updates_are_exact,
    super::queued_updates_match_one_per_submit
);

/// Validation rows loaded on the device, and rows given all at once, predict to the bit as
/// the same rows given from the host a batch at a time, whatever the device's queue holds (chunks of max_batch, a short last chunk, queued
/// updates before the prediction and a changed batch size after it).
fn resident_validation_predicts_like_host_rows(device: &Device) {
    let (x, labels) = task();
    let mut trainer = Trainer::new(
        device,
        classifier(),
        TrainOptions {
            max_batch: 16,
            ..options()
        },
        Scheduler::fixed(0.05).unwrap(),
    )
    .unwrap();
    let e = trainer.predict_validation().unwrap_err().to_string();
    assert!(e.contains("no validation rows are loaded"), "{e}");
    let e = trainer.load_validation(&x[..9]).unwrap_err().to_string();
    assert!(e.contains("validation rows"), "{e}");
    let mut bad = x[..8].to_vec();
    bad[3] = f32::NAN;
    let e = trainer.load_validation(&bad).unwrap_err().to_string();
    assert!(e.contains("NaN") || e.contains("finite"), "{e}");

    // 45 rows: two full chunks of 16 and one of 13.
    let held_out = &x[100 * 4..145 * 4];
    trainer.load_validation(held_out).unwrap();
    trainer
        .load_data(&x[..100 * 4], Targets::Classes(&labels[..100]))
        .unwrap();
    trainer.set_order(&(0..100).collect::<Vec<u32>>()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for round in 0..3 {
        for s in 0..5 {
            trainer.step_data(s * 16, 16).unwrap();
        }
        let resident = trainer.predict_validation().unwrap();
        assert_eq!(resident.len(), 45 * 3);
        // The same rows a batch at a time from the host (each call within max_batch), and all
        // at once (more than max_batch: uploaded whole and predicted on the device).
        let batch_by_batch: Vec<f32> = held_out
            .chunks(16 * 4)
            .flat_map(|c| trainer.predict(c).unwrap())
            .collect();
        assert_eq!(bits(&resident), bits(&batch_by_batch), "round {round}");
        assert_eq!(
            bits(&trainer.predict(held_out).unwrap()),
            bits(&batch_by_batch),
            "round {round}"
        );
        // A short batch after a prediction trains on its own batch size.
        trainer.step_data(96, 4).unwrap();
    }
}
test_device!(
    resident_validation_is_exact,
    super::resident_validation_predicts_like_host_rows
);

/// Each product's tile shape tuned on that product (a GPU's default; forced on here, where
/// lavapipe would skip it) trains the same model to the bit as the size classes' shapes:
/// every shape computes each output as one fma chain over k in order. (Split-k, which rounds
/// differently, is off in the tests' contexts, `common::gpu_options`.)
#[test]
fn tiles_tuned_per_product_train_like_the_size_classes() {
    if common::gpu_device().is_none() {
        return;
    }
    let device = |tune_shapes| {
        Arc::new(
            kiln::GpuContext::new(&kiln::AdapterOptions {
                tune_shapes: Some(tune_shapes),
                ..common::gpu_options()
            })
            .unwrap(),
        )
    };
    let (tuned, classes) = (device(true), device(false));
    let model = Sequential::new(
        4,
        vec![
            Layer::Dense { out: 37 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let (x, labels) = task();
    let run = |ctx: &Arc<kiln::GpuContext>| {
        let device = Device::Gpu(ctx.clone());
        let mut t = Trainer::new(
            &device,
            model.clone(),
            options(),
            Scheduler::fixed(0.1).unwrap(),
        )
        .unwrap();
        train(&mut t, &x, &labels, 10);
        (t.losses().unwrap().to_vec(), t.parameters().unwrap())
    };
    let (a, b) = (run(&tuned), run(&classes));
    assert!(classes.product_tiles().is_empty());
    let products = tuned.product_tiles();
    let batch = options().max_batch;
    for (shape, tile) in &products {
        assert!(tile.fits(tuned.limits()), "{shape}: {tile}");
    }
    // The first layer's forward product, its weight gradient, the second layer's three.
    for want in [
        format!("{batch}x37x4 Nt"),
        format!("37x4x{batch} Tn"),
        format!("{batch}x3x37 Nt"),
        format!("3x37x{batch} Tn"),
        format!("{batch}x37x3 Nn"),
    ] {
        assert!(
            products.iter().any(|(s, _)| *s == want),
            "{want} not tuned: {products:?}"
        );
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&b.0), "losses, bit for bit");
    assert_eq!(bits(&a.1), bits(&b.1), "parameters, bit for bit");
}

/// Every product that can split k forced to (`AdapterOptions::matmul_tiles`): a model whose
/// products have k from 3 to 300, at its largest batch, at a batch whose weight gradients split
/// fewer ways, at one too short to split them (one run, in launches recorded for several) and
/// back, trains as the CPU does, losses, parameters and predictions.
#[test]
fn products_that_split_k_train_like_the_cpu() {
    if common::gpu_device().is_none() {
        return;
    }
    let split = Arc::new(
        kiln::GpuContext::new(&kiln::AdapterOptions {
            matmul_tiles: Some("64x64x16/4x4/split4".into()),
            ..common::gpu_options()
        })
        .unwrap(),
    );
    let model = Sequential::new(
        300,
        vec![
            Layer::Dense { out: 70 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let rows = 900;
    let x = common::random(rows * 300, -1.0, 1.0, 77);
    let labels = common::random_labels(rows, 3, 78);
    let mut runs = Vec::new();
    for device in [Device::Cpu, Device::Gpu(split.clone())] {
        let opts = TrainOptions {
            max_batch: 300,
            ..options()
        };
        let mut t = Trainer::new(
            &device,
            model.clone(),
            opts,
            Scheduler::fixed(0.05).unwrap(),
        )
        .unwrap();
        let mut start = 0;
        for batch in [300, 256, 40, 300] {
            let end = start + batch;
            t.step(
                &x[start * 300..end * 300],
                Targets::Classes(&labels[start..end]),
            )
            .unwrap();
            start = end;
        }
        let predicted = t.predict(&x[..7 * 300]).unwrap();
        runs.push((
            t.losses().unwrap().to_vec(),
            t.parameters().unwrap(),
            predicted,
        ));
    }
    let (cpu, gpu) = (&runs[0], &runs[1]);
    common::assert_close("losses", &gpu.0, &cpu.0, common::LOSS_CURVE);
    common::assert_close("parameters", &gpu.1, &cpu.1, common::LOSS_CURVE);
    common::assert_close("predictions", &gpu.2, &cpu.2, common::LOSS_CURVE);
}

/// Activations fused into the products before them (the default) train as the same model with
/// every activation a kernel of its own (`AdapterOptions::separate_activations`): both compute
/// each activation with the same WGSL function of the same pre-activation.
#[test]
fn fused_activations_train_like_separate_ones() {
    if common::gpu_device().is_none() {
        return;
    }
    let device = |separate_activations| {
        let ctx = kiln::GpuContext::new(&kiln::AdapterOptions {
            separate_activations,
            ..common::gpu_options()
        })
        .unwrap();
        assert_eq!(ctx.fuses_activations(), !separate_activations);
        Device::Gpu(std::sync::Arc::new(ctx))
    };
    let (fused, separate) = (device(false), device(true));
    let model = Sequential::new(
        4,
        vec![
            Layer::Dense { out: 19 },
            Layer::Activation(Activation::Gelu),
            Layer::Dense { out: 17 },
            Layer::Activation(Activation::LeakyRelu(0.1)),
            Layer::Dense { out: 9 },
            Layer::Activation(Activation::Tanh),
            Layer::Activation(Activation::Sigmoid),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let (x, labels) = task();
    let run = |device: &Device| {
        let mut t = Trainer::new(
            device,
            model.clone(),
            options(),
            Scheduler::fixed(0.1).unwrap(),
        )
        .unwrap();
        train(&mut t, &x, &labels, 20);
        (t.losses().unwrap().to_vec(), t.parameters().unwrap())
    };
    // The same function of the same value, in another kernel: equal to the bit here; a
    // compiler free to contract differently per kernel could move the last bits.
    let (a, b) = (run(&fused), run(&separate));
    common::assert_close("fused losses", &a.0, &b.0, common::LOSS_CURVE);
    common::assert_close("fused parameters", &a.1, &b.1, common::LOSS_CURVE);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    if std::env::var_os("CI").is_some() {
        // CI runs lavapipe, whose compiler treats both kernels alike.
        assert_eq!(bits(&a.1), bits(&b.1), "fused parameters, bit for bit");
    }
}

/// A profiled update is a real one, unchanged by being timed: a trainer that profiles some of
/// its updates (kernel by kernel, or whole; from host batches and resident ones, with resident
/// updates queued before) ends with the losses and parameters of one that does not, to the
/// bit. Each profile names the kernels the update ran, in order, with their times.
fn profiled_updates_train_like_plain_ones(device: &Device) {
    use kiln::train::ProfileMode;
    let rows = 14;
    let x = common::random(rows * 5, -1.0, 1.0, 51);
    let labels = common::random_labels(rows, 3, 52);
    let model = Sequential::new(
        5,
        vec![
            Layer::Dense { out: 7 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let opts = TrainOptions {
        max_batch: 6,
        ..options()
    };
    let new = || {
        let mut t = Trainer::new(
            device,
            model.clone(),
            opts.clone(),
            Scheduler::fixed(0.05).unwrap(),
        )
        .unwrap();
        t.load_data(&x, Targets::Classes(&labels)).unwrap();
        t.set_order(&(0..rows as u32).rev().collect::<Vec<_>>())
            .unwrap();
        t
    };
    let (mut plain, mut profiled) = (new(), new());
    if let Device::Gpu(ctx) = device
        && !ctx
            .features()
            .contains(kiln::wgpu::Features::TIMESTAMP_QUERY)
    {
        let e = profiled
            .profile(ProfileMode::Kernels, |t| t.step_data(0, 6))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no timestamp queries"), "{e}");
        return;
    }
    let host_x = &x[..6 * 5];
    let host_labels = Targets::Classes(&labels[..6]);

    // Queued resident updates first, then a host batch timed kernel by kernel.
    for t in [&mut plain, &mut profiled] {
        t.step_data(0, 6).unwrap();
        t.step_data(6, 6).unwrap();
    }
    plain.step(host_x, host_labels).unwrap();
    let kernels = profiled
        .profile(ProfileMode::Kernels, |t| t.step(host_x, host_labels))
        .unwrap();
    let names: Vec<&str> = kernels.iter().map(|k| k.kernel.as_str()).collect();
    assert!(names[0].starts_with("matmul 6x7x5 nt"), "{names:?}");
    assert!(names.contains(&"loss 6x3"), "{names:?}");
    assert_eq!(names.last(), Some(&"sgd update"), "{names:?}");
    // Two dense layers: two forward products, two dW, one dX (the input's is not needed).
    let products: Vec<&kiln::train::KernelTime> = kernels
        .iter()
        .filter(|k| k.kernel.starts_with("matmul"))
        .collect();
    assert_eq!(products.len(), 5, "{names:?}");
    assert_eq!(products[0].flops, Some(2.0 * 6.0 * 7.0 * 5.0));
    for k in &kernels {
        assert!(k.seconds.is_finite() && k.seconds >= 0.0, "{k:?}");
        let is_product = k.kernel.starts_with("matmul");
        assert_eq!(k.flops.is_some(), is_product, "{k:?}");
        assert_eq!(
            k.tile.is_some(),
            is_product && matches!(device, Device::Gpu(_)),
            "{k:?}"
        );
    }
    assert!(kernels.iter().map(|k| k.seconds).sum::<f64>() > 0.0);

    // A short resident batch, kernel by kernel: its gathers come first.
    plain.step_data(12, 2).unwrap();
    let kernels = profiled
        .profile(ProfileMode::Kernels, |t| t.step_data(12, 2))
        .unwrap();
    assert_eq!(kernels[0].kernel, "gather batch");
    assert!(
        kernels[1].kernel.starts_with("matmul 2x7x5 nt"),
        "{kernels:?}"
    );

    // Whole: one entry.
    plain.step_data(0, 6).unwrap();
    let whole = profiled
        .profile(ProfileMode::Update, |t| t.step_data(0, 6))
        .unwrap();
    assert_eq!(whole.len(), 1, "{whole:?}");
    assert_eq!(whole[0].kernel, "whole update");
    assert!(whole[0].seconds > 0.0, "{whole:?}");
    // Two updates in the function: the first is timed, the second runs as any other.
    for _ in 0..2 {
        plain.step_data(0, 6).unwrap();
    }
    let first = profiled
        .profile(ProfileMode::Update, |t| {
            t.step_data(0, 6)?;
            t.step_data(0, 6)
        })
        .unwrap();
    assert_eq!(first.len(), 1, "{first:?}");

    // No update, or a failing one: an error, and the next update is not timed by surprise.
    let e = profiled
        .profile(ProfileMode::Kernels, |t| t.losses().map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ran no update"), "{e}");
    let e = profiled
        .profile(ProfileMode::Kernels, |t| t.step_data(12, 6))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows 12..12+6"), "{e}");
    for t in [&mut plain, &mut profiled] {
        t.step_data(6, 6).unwrap();
    }

    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(plain.losses().unwrap()),
        bits(profiled.losses().unwrap())
    );
    assert_eq!(
        bits(&plain.parameters().unwrap()),
        bits(&profiled.parameters().unwrap())
    );
}
test_device!(
    profiled_updates_match_plain_ones,
    super::profiled_updates_train_like_plain_ones
);

/// A schedule that cannot give the rate after an update (NaN, or a rate finite in f64 but past
/// the f32 that updates compute in): the update is counted and its loss kept, and the trainer
/// refuses the next update, which would have used that rate, and every one after it, saying
/// why.
#[test]
fn a_schedule_that_fails_stops_the_trainer_consistently() {
    use kiln::schedule::Schedule;
    for (factor, wanted) in [
        (f64::NAN, "NaN"),
        (1e300, "the rate for update 1 is 1e299, past f32's largest"),
    ] {
        let model = Sequential::new(2, vec![Layer::Dense { out: 1 }], Loss::Mse).unwrap();
        let opts = TrainOptions {
            max_batch: 2,
            ..Default::default()
        };
        let schedule = Scheduler::new(
            0.1,
            Schedule::lambda(move |t| if t >= 1 { factor } else { 1.0 }),
        )
        .unwrap();
        let mut trainer = Trainer::new(&Device::Cpu, model, opts, schedule).unwrap();
        let (x, y) = ([0.5, 0.25, -0.5, 1.0], [1.0, 0.0]);
        trainer.step(&x, Targets::Values(&y)).unwrap();
        assert_eq!(trainer.losses().unwrap().len(), 1);
        let params = trainer.parameters().unwrap();
        for attempt in 0..2 {
            let e = trainer
                .step(&x, Targets::Values(&y))
                .unwrap_err()
                .to_string();
            assert!(e.contains("schedule") && e.contains(wanted), "{e}");
            // Refused again, as failed after update 0.
            assert!(
                attempt == 0 || e.contains("failed to step after update 0"),
                "{e}"
            );
            assert_eq!(trainer.steps(), 1);
            assert_eq!(trainer.parameters().unwrap(), params);
        }
    }
}
