//! Runs as users meet them: PyTorch's weights in, exact resume, NaN policy, logs.

mod common;

use std::path::Path;

use kiln::run::{Run, RunConfig};
use kiln::{Activation, Device, Layer, Loss, Sequential, weights};
use safetensors::SafeTensors;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_f32(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// PyTorch 2.15 wrote the weights of nn.Sequential(Linear(3,4), Tanh(), Linear(4,2)) and its
/// output for an input; Kiln loads them and computes the same output.
fn loads_pytorch_weights(device: &Device) {
    let model = Sequential::new(
        3,
        vec![
            Layer::Dense { out: 4 },
            Layer::Activation(Activation::Tanh),
            Layer::Dense { out: 2 },
        ],
        Loss::Mse,
    )
    .unwrap();
    let layout = model.param_layout(kiln::train::PARAM_ALIGN);
    let params = weights::load(&fixture("torch_mlp.safetensors"), &layout).unwrap();
    let io = std::fs::read(fixture("torch_mlp_io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io).unwrap();
    let (x, y) = (read_f32(&io, "x"), read_f32(&io, "y"));
    let options = kiln::train::TrainOptions {
        max_batch: 5,
        ..Default::default()
    };
    let schedule = kiln::schedule::Scheduler::fixed(0.0).unwrap();
    let mut trainer = kiln::Trainer::with_params(device, model, options, schedule, params).unwrap();
    let out = trainer.predict(&x).unwrap();
    common::assert_close(
        "PyTorch's output",
        &out,
        &y,
        common::Tolerance {
            abs: 1e-6,
            rel: 1e-5,
        },
    );
}
test_device!(kiln_loads_pytorch_weights, super::loads_pytorch_weights);

const RUN: &str = r#"
[model]
layers = [{ dense = 16 }, "tanh", { dense = 10 }]
loss = "cross_entropy"
[data]
source = "digits"
validation = 0.2
normalize = "standard"
seed = 3
[optimizer]
lr = 0.05
momentum = 0.9
dampening = 0.1
[schedule]
kind = "chained"
schedules = [{ kind = "cosine_annealing", t_max = 60 }, { kind = "bold_driver", decrease = 0.7, increase = 1.02 }]
[train]
steps = 60
batch_size = 100
clip_grad_norm = 5
"#;

/// Run 60 updates straight; run 37, checkpoint, resume in a new Run, run the rest: the final
/// weights are identical bit for bit. The run crosses epochs (15 batches each, the last one
/// smaller), shuffles, uses momentum, clipping and a one-update-late observation schedule.
fn resume_is_exact(device: &Device) {
    let base = Path::new(".");
    let config = RunConfig::from_toml(RUN, "run.toml").unwrap();
    let mut straight = Run::new(config.clone(), base, device, None, None).unwrap();
    while !straight.finished() {
        straight.step().unwrap();
    }
    let want = straight.trainer.parameters().unwrap();

    let dir = std::env::temp_dir().join(format!(
        "kiln-resume-{}-{}",
        std::process::id(),
        device.name().len()
    ));
    let mut first = Run::new(config.clone(), base, device, None, Some(37)).unwrap();
    while !first.finished() {
        first.step().unwrap();
    }
    first.checkpoint(&dir).unwrap();
    drop(first);
    let mut resumed = Run::resume(config, base, device, &dir, None).unwrap();
    assert_eq!(resumed.steps_done(), 37);
    while !resumed.finished() {
        resumed.step().unwrap();
    }
    let got = resumed.trainer.parameters().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(got.len(), want.len());
    let differing = got
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differing, 0, "{differing} parameters differ after resuming");
}
test_device!(resume_equals_an_uninterrupted_run, super::resume_is_exact);

#[test]
fn a_checkpoint_for_another_model_is_refused() {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-mismatch-{}", std::process::id()));
    let config = RunConfig::from_toml(RUN, "run.toml").unwrap();
    let mut run = Run::new(config.clone(), Path::new("."), &Device::Cpu, None, Some(2)).unwrap();
    run.step().unwrap();
    run.checkpoint(&dir).unwrap();
    let wider = RunConfig::from_toml(&RUN.replace("dense = 16", "dense = 17"), "run.toml").unwrap();
    let e = Run::resume(wider, Path::new("."), &Device::Cpu, &dir, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors")
            && e.contains("`layers.0.weight` has shape [16, 64], expected [17, 64]"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The CSV options apply where any of the run's files is a CSV file: a bundled training set
/// with held-out rows from a headerless CSV file is a run, the options on the bundled set
/// alone are refused.
#[test]
fn csv_options_apply_where_a_file_is_csv() {
    let dir = std::env::temp_dir().join(format!("kiln-csv-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let row = |label: u32| {
        let mut r: Vec<String> = (0..64).map(|i| (i % 16).to_string()).collect();
        r.push(label.to_string());
        r.join(",")
    };
    std::fs::write(dir.join("v.csv"), format!("{}\n{}\n", row(3), row(7))).unwrap();
    let text = RUN.replace(
        "validation = 0.2",
        "validation_path = \"v.csv\"\nheader = false",
    );
    let config = RunConfig::from_toml(&text, "run.toml").unwrap();
    Run::new(config, &dir, &Device::Cpu, None, Some(1)).unwrap();
    let alone = RUN.replace("validation = 0.2", "validation = 0.2\nheader = false");
    let config = RunConfig::from_toml(&alone, "run.toml").unwrap();
    let e = Run::new(config, &dir, &Device::Cpu, None, Some(1))
        .err()
        .expect("CSV options without a CSV file")
        .to_string();
    assert!(
        e.contains("invalid data.header: applies to CSV files"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A checkpoint records the schedule its run started with: resuming under another (another
/// kind, other numbers, another base rate through [optimizer].lr) is refused naming the
/// schedule; the same run file resumes, with more updates too.
#[test]
fn resuming_under_another_schedule_is_refused() {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-schedule-{}", std::process::id()));
    let config = RunConfig::from_toml(RUN, "run.toml").unwrap();
    let mut run = Run::new(config.clone(), Path::new("."), &Device::Cpu, None, Some(3)).unwrap();
    while !run.finished() {
        run.step().unwrap();
    }
    run.checkpoint(&dir).unwrap();
    drop(run);
    for other in [
        RUN.replace("t_max = 60", "t_max = 61"),
        RUN.replace("lr = 0.05", "lr = 0.06"),
        RUN.replace(
            r#"kind = "chained"
schedules = [{ kind = "cosine_annealing", t_max = 60 }, { kind = "bold_driver", decrease = 0.7, increase = 1.02 }]"#,
            "kind = \"step\"\nstep_size = 5",
        ),
    ] {
        assert_ne!(other, RUN);
        let config = RunConfig::from_toml(&other, "run.toml").unwrap();
        let e = Run::resume(config, Path::new("."), &Device::Cpu, &dir, None)
            .err()
            .expect("a changed schedule is refused")
            .to_string();
        assert!(
            e.contains("invalid schedule") && e.contains("cannot change its schedule"),
            "{e}"
        );
    }
    // The default monitor written out is the same schedule.
    let explicit = RUN.replace("[schedule]\n", "[schedule]\nmonitor = \"loss\"\n");
    assert_ne!(explicit, RUN);
    let explicit = RunConfig::from_toml(&explicit, "run.toml").unwrap();
    let resumed = Run::resume(explicit, Path::new("."), &Device::Cpu, &dir, Some(5)).unwrap();
    assert_eq!(resumed.steps_done(), 3);
    let resumed = Run::resume(config, Path::new("."), &Device::Cpu, &dir, Some(5)).unwrap();
    assert_eq!(resumed.steps_done(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without shuffling, update t takes rows [(t mod nb)·B, +B) of the training rows, the last
/// batch of an epoch smaller; with shuffling, each epoch is a permutation, the same for the
/// same (seed, epoch).
#[test]
fn batches_follow_the_dataloader_order() {
    let text = RUN
        .replace("validation = 0.2", "validation = 0.0")
        .replace("seed = 3", "seed = 3\nshuffle = false");
    let config = RunConfig::from_toml(&text, "run.toml").unwrap();
    let mut run = Run::new(config, Path::new("."), &Device::Cpu, None, None).unwrap();
    // 1797 rows in batches of 100: 18 per epoch, the last of 97.
    assert_eq!(run.batches_per_epoch(), 18);
    assert_eq!(run.batch_rows(0), (0..100).collect::<Vec<_>>());
    assert_eq!(run.batch_rows(17), (1700..1797).collect::<Vec<_>>());
    assert_eq!(run.batch_rows(18), (0..100).collect::<Vec<_>>());
    assert_eq!(run.batch_rows(20), (200..300).collect::<Vec<_>>());

    let config = RunConfig::from_toml(RUN, "run.toml").unwrap();
    let mut run = Run::new(config.clone(), Path::new("."), &Device::Cpu, None, None).unwrap();
    let mut epoch0: Vec<usize> = (0..run.batches_per_epoch())
        .flat_map(|t| run.batch_rows(t))
        .collect();
    let epoch1: Vec<usize> = (run.batches_per_epoch()..2 * run.batches_per_epoch())
        .flat_map(|t| run.batch_rows(t))
        .collect();
    assert_ne!(epoch0, epoch1, "each epoch reshuffles");
    let mut again = Run::new(config, Path::new("."), &Device::Cpu, None, None).unwrap();
    assert_eq!(
        again.batch_rows(run.batches_per_epoch() + 3),
        run.batch_rows(run.batches_per_epoch() + 3)
    );
    epoch0.sort();
    assert_eq!(
        epoch0,
        (0..epoch0.len()).collect::<Vec<_>>(),
        "an epoch visits every row once"
    );
}

#[test]
fn a_checkpoint_directory_belongs_to_one_run_at_a_time() {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-held-{}", std::process::id()));
    let config = RunConfig::from_toml(RUN, "run.toml").unwrap();
    let new_run = || Run::new(config.clone(), Path::new("."), &Device::Cpu, None, Some(4)).unwrap();
    let (mut first, mut second) = (new_run(), new_run());
    first.step().unwrap();
    first.checkpoint(&dir).unwrap();
    // The holder checkpoints again, under another spelling of the directory too.
    first.step().unwrap();
    first.checkpoint(&dir.join(".")).unwrap();
    let e = second.checkpoint(&dir).err().unwrap().to_string();
    assert!(
        e.contains("another kiln run is writing checkpoints here"),
        "{e}"
    );
    // What the refused run tried to write left the holder's checkpoint whole.
    let resumed = Run::resume(config.clone(), Path::new("."), &Device::Cpu, &dir, None).unwrap();
    assert_eq!(resumed.steps_done(), 2);
    drop(first);
    second.checkpoint(&dir).unwrap();
    drop(second);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On a GPU the default run keeps its training and validation rows on the device and says
/// so; its evaluations equal the CPU device's within the GPU's rounding.
#[test]
fn a_gpu_run_keeps_its_validation_rows_on_the_device() {
    let Some(gpu) = common::gpu_device() else {
        return;
    };
    let run = |device: &Device| {
        let mut run = Run::new(
            RunConfig::default_run(),
            Path::new("."),
            device,
            None,
            Some(40),
        )
        .unwrap();
        while !run.finished() {
            run.step().unwrap();
        }
        let placement = run.placement().to_string();
        (run.evaluate().unwrap().unwrap(), placement)
    };
    let (on_gpu, placement) = run(&gpu);
    assert!(
        placement.contains("training rows on the device")
            && placement.contains("validation rows there too"),
        "{placement}"
    );
    let (on_cpu, _) = run(&Device::Cpu);
    assert!(
        (on_gpu.loss - on_cpu.loss).abs() <= 1e-4 * on_cpu.loss.abs().max(1.0),
        "{on_gpu:?} {on_cpu:?}"
    );
    assert!(
        (on_gpu.accuracy.unwrap() - on_cpu.accuracy.unwrap()).abs() <= 0.01,
        "{on_gpu:?} {on_cpu:?}"
    );
}
