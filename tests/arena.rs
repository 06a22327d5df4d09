//! Models larger than one binding or one buffer (`kiln::gpu::arena`): a device with small
//! limits splits the arenas across buffers and binds them in chunks, and trains exactly as a
//! device that holds each arena in one binding — bit for bit where the kernels are elementwise
//! (every optimizer, the no-decay mask across chunks), within rounding where the gradient norm
//! sums chunk by chunk. A model over the device's memory is refused before anything is
//! allocated, naming the sizes; data that does not fit beside it stays on the host.

mod common;

use std::path::Path;
use std::sync::Arc;

use kiln::gpu::arena::ArenaSplit;
use kiln::optim::OptimizerConfig;
use kiln::run::{Placement, Run, RunConfig, ValidationPlacement};
use kiln::schedule::Scheduler;
use kiln::train::{PARAM_ALIGN, TrainOptions};
use kiln::{
    Activation, AdapterOptions, Device, GpuContext, Layer, Loss, Sequential, Targets, Trainer,
};

/// Bytes of the largest binding and the largest buffer on the small device: a 64×64 weight
/// (16 KiB) just fits a binding, and a buffer holds two of them.
const BINDING: u64 = 16 << 10;
const BUFFER: u64 = 40 << 10;

fn capped(opts: AdapterOptions) -> Option<Device> {
    // Skips (or, in CI, fails) as every GPU test does when there is no adapter.
    common::gpu()?;
    Some(Device::Gpu(Arc::new(GpuContext::new(&opts).unwrap())))
}

fn small_device() -> Option<Device> {
    capped(AdapterOptions {
        max_buffer_size: Some(BUFFER),
        max_storage_binding: Some(BINDING),
        ..common::gpu_options()
    })
}

fn model() -> Sequential {
    let mut layers = Vec::new();
    for _ in 0..4 {
        layers.push(Layer::Dense { out: 64 });
        layers.push(Layer::Activation(Activation::Relu));
    }
    layers.push(Layer::Dense { out: 3 });
    Sequential::new(5, layers, Loss::CrossEntropy).unwrap()
}

const OPTIMIZERS: &[&str] = &[
    "kind = \"sgd\"\nlr = 0.05\nmomentum = 0.9\nnesterov = true\nweight_decay = 0.01\ndecay_biases = false",
    "kind = \"adamw\"\nlr = 0.01\ndecay_biases = false",
    "kind = \"adam\"\nlr = 0.01\namsgrad = true\nweight_decay = 0.001",
    "kind = \"rmsprop\"\nlr = 0.005\ncentered = true\nmomentum = 0.5",
    "kind = \"adagrad\"\nlr = 0.05\ninitial_accumulator_value = 0.1",
    "kind = \"nadam\"\nlr = 0.01\nweight_decay = 0.01",
    "kind = \"radam\"\nlr = 0.01\ndecoupled_weight_decay = true\nweight_decay = 0.01",
];

/// Losses, parameters and every optimizer state tensor after `steps` updates.
fn train(device: &Device, optimizer: &str, clip: Option<f32>, steps: usize) -> Vec<Vec<f32>> {
    let config = OptimizerConfig::from_table(toml::from_str(optimizer).unwrap()).unwrap();
    let options = TrainOptions {
        optimizer: config.optimizer,
        max_batch: 16,
        seed: 3,
        clip_grad_norm: clip,
        ..Default::default()
    };
    let mut t = Trainer::new(
        device,
        model(),
        options,
        Scheduler::fixed(config.lr).unwrap(),
    )
    .unwrap();
    let x = common::random(40 * 5, -1.0, 1.0, 5);
    let labels = common::random_labels(40, 3, 6);
    for s in 0..steps {
        let at = (s * 16) % 32;
        t.step(
            &x[at * 5..(at + 16) * 5],
            Targets::Classes(&labels[at..at + 16]),
        )
        .unwrap();
    }
    let mut out = vec![t.losses().unwrap().to_vec(), t.parameters().unwrap()];
    out.extend(
        t.state()
            .unwrap()
            .optimizer
            .blocks
            .into_iter()
            .map(|(_, b)| b),
    );
    out
}

#[test]
fn the_small_device_really_splits_the_model() {
    let Some(Device::Gpu(ctx)) = small_device() else {
        return;
    };
    let layout = model().param_layout(PARAM_ALIGN);
    let split = ArenaSplit::on(&ctx, &layout).unwrap();
    assert!(split.parts().len() >= 2, "{split:?}");
    assert!(split.chunks().len() >= 5, "{split:?}");
}

#[test]
fn split_arenas_train_bit_for_bit_like_one_binding() {
    let (Some(small), Some(whole)) = (small_device(), common::gpu_device()) else {
        return;
    };
    for optimizer in OPTIMIZERS {
        let bits = |v: Vec<Vec<f32>>| {
            v.into_iter()
                .map(|t| t.into_iter().map(f32::to_bits).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bits(train(&small, optimizer, None, 6)),
            bits(train(&whole, optimizer, None, 6)),
            "{optimizer}"
        );
    }
}

#[test]
fn a_split_gradient_norm_clips_like_one_binding() {
    let (Some(small), Some(whole)) = (small_device(), common::gpu_device()) else {
        return;
    };
    let optimizer = OPTIMIZERS[1];
    let (a, b) = (
        train(&small, optimizer, Some(0.05), 6),
        train(&whole, optimizer, Some(0.05), 6),
    );
    // The norm sums the same squares in another order (chunk by chunk): ‖g‖² agrees to a few
    // f32 ulps, and so do the clipped updates after 6 steps.
    for (x, y) in a.iter().zip(&b) {
        common::assert_close("clipped training", x, y, common::LOSS_CURVE);
    }
}

#[test]
fn a_model_over_the_device_memory_is_refused_naming_the_sizes() {
    let Some(device) = capped(AdapterOptions {
        max_device_memory: Some(1 << 20),
        ..common::gpu_options()
    }) else {
        return;
    };
    // 784·512 + 512·512 + 512·10 weights: about 2.6 MB of parameters, ×3 with momentum.
    let big = Sequential::new(
        784,
        vec![
            Layer::Dense { out: 512 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 512 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 10 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let e = Trainer::new(
        &device,
        big.clone(),
        TrainOptions::default(),
        Scheduler::fixed(0.1).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GPU memory") && e.contains("has 1.0 MiB"), "{e}");
    // Starting from given weights is checked the same way.
    let params = vec![0.0; big.param_layout(PARAM_ALIGN).len];
    let e = Trainer::with_params(
        &device,
        big,
        TrainOptions::default(),
        Scheduler::fixed(0.1).unwrap(),
        params,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GPU memory"), "{e}");
}

/// The memory check counts a GPU trainer's scratch before tuning picks any split: the bias
/// gradients' partial sums, and split-k's partial products as if each product split k as
/// many ways as it can.
#[test]
fn the_memory_check_counts_the_scratch_a_split_could_take() {
    let Some(device) = capped(AdapterOptions {
        max_device_memory: Some(1 << 20),
        ..common::gpu_options()
    }) else {
        return;
    };
    let model = Sequential::new(
        256,
        vec![
            Layer::Dense { out: 256 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 10 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let options = TrainOptions {
        max_batch: 2048,
        ..Default::default()
    };
    let e = Trainer::new(&device, model, options, Scheduler::fixed(0.1).unwrap())
        .unwrap_err()
        .to_string();
    // The first layer's dW (256×256, k = 2048) splits at most 32 ways, 32·256·256 floats
    // (its forward product, 2048×256 with k = 256, 4 ways of 64: as many); one buffer serves
    // every product, so 8 MiB. The bias sums: 64 parts of 32 rows · 256 columns, 64 KiB.
    let scratch = (32 * 256 * 256 + 64 * 256) * 4;
    assert!(
        e.contains(&format!(
            "scratch {:.1} MiB",
            scratch as f64 / (1 << 20) as f64
        )),
        "{e}"
    );
}

/// Rows that do not fit beside the model are streamed in windows that do, or, when not even
/// one batch fits, gathered on the host; the run says why.
#[test]
fn rows_that_do_not_fit_beside_the_model_stream_or_stay_on_the_host() {
    // The model and its batch buffers take about 70 KB, a batch of 100 rows 30 KB, all 1438
    // rows 430 KB.
    let config = RunConfig::from_toml(STREAMED_RUN, "run.toml").unwrap();
    for (memory, streamed) in [(200 << 10, true), (90 << 10, false)] {
        let Some(device) = capped(AdapterOptions {
            max_device_memory: Some(memory),
            ..common::gpu_options()
        }) else {
            return;
        };
        let mut run = Run::new(config.clone(), Path::new("."), &device, None, Some(20)).unwrap();
        match (run.placement(), streamed) {
            (Placement::Streamed { why, .. }, true) | (Placement::Host { why }, false) => {
                assert!(why.contains("device memory"), "{why}")
            }
            (p, _) => panic!("{memory}: {p}"),
        }
        while !run.finished() {
            run.step().unwrap();
        }
    }
}

/// A run with an epoch order (shuffled), a short last batch (1438 rows in batches of 100) and
/// an epoch-interval schedule, so that updates queue several per submission.
const STREAMED_RUN: &str = r#"
[model]
layers = [{ dense = 16 }, "tanh", { dense = 10 }]
loss = "cross_entropy"
[data]
source = "digits"
validation = 0.2
seed = 4
[optimizer]
lr = 0.05
momentum = 0.9
[schedule]
kind = "step"
step_size = 1
gamma = 0.7
interval = "epoch"
[train]
steps = 40
batch_size = 100
"#;

fn run_to_end(mut run: Run) -> (Vec<u32>, Vec<u32>) {
    while !run.finished() {
        run.step().unwrap();
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    (
        bits(run.trainer.losses().unwrap()),
        bits(&run.trainer.parameters().unwrap()),
    )
}

/// Training rows over the binding limit are streamed in windows, and train exactly as the
/// same rows resident on the device: losses and weights equal to the bit, a resume in the
/// middle of a window included.
#[test]
fn rows_over_the_binding_limit_stream_and_train_like_resident_rows() {
    // 1438 rows × 64 features × 4 bytes = 368 KB: over a 64 KiB binding; windows of 2 batches.
    let (Some(small), Some(whole)) = (
        capped(AdapterOptions {
            max_storage_binding: Some(64 << 10),
            ..common::gpu_options()
        }),
        common::gpu_device(),
    ) else {
        return;
    };
    let config = RunConfig::from_toml(STREAMED_RUN, "run.toml").unwrap();
    let base = Path::new(".");
    let streamed = Run::new(config.clone(), base, &small, None, None).unwrap();
    match streamed.placement() {
        Placement::Streamed {
            window_rows,
            why,
            validation,
        } => {
            assert_eq!(*window_rows, 200);
            assert!(why.contains("max_storage_buffer_binding_size"), "{why}");
            // Validation rows are only copied, never bound: the binding limit does not apply.
            assert_eq!(*validation, ValidationPlacement::Device { rows: 359 });
        }
        p => panic!("{p}"),
    }
    assert!(streamed.placement().to_string().contains("streamed"));
    let resident = Run::new(config.clone(), base, &whole, None, None).unwrap();
    assert!(matches!(resident.placement(), Placement::Device { .. }));
    let (want_losses, want_params) = run_to_end(resident);
    assert_eq!(
        run_to_end(streamed),
        (want_losses.clone(), want_params.clone())
    );

    // Stopped after update 24 (the middle of a window: epoch 1, batch 9 of the window [8, 10)),
    // resumed from a checkpoint; the resumed run starts its windows there.
    let dir = std::env::temp_dir().join(format!("kiln-streamed-{}", std::process::id()));
    let mut first = Run::new(config.clone(), base, &small, None, Some(24)).unwrap();
    while !first.finished() {
        first.step().unwrap();
    }
    first.checkpoint(&dir).unwrap();
    drop(first);
    let resumed = Run::resume(config, base, &small, &dir, None).unwrap();
    let (losses, params) = run_to_end(resumed);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(losses[..], want_losses[24..]);
    assert_eq!(params, want_params);
}
