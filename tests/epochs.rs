//! Schedules stepped once per epoch and fed validation metrics, early stopping, explicit
//! validation sets: the loop PyTorch and Keras users write.
//!
//! `tests/fixtures/torch_epochs.safetensors` was written by `tests/fixtures/torch_epochs.py`
//! (PyTorch 2.15, CPU): Linear(4,8)–Tanh–Linear(8,3), cross-entropy, SGD(lr=0.1,
//! momentum=0.9), 50 training rows in batches of 16 in file order (4 updates an epoch), 8
//! epochs, each ending with the loss and accuracy on 20 validation rows and then
//! `scheduler.step()` (StepLR, MultiStepLR, CosineAnnealingLR, ExponentialLR) or
//! `scheduler.step(metric)` (ReduceLROnPlateau on the validation loss, the validation accuracy,
//! the epoch's mean batch loss).

mod common;

use std::path::{Path, PathBuf};

use common::Tolerance;
use kiln::run::{Run, RunConfig};
use kiln::train::PARAM_ALIGN;
use kiln::{Device, weights};
use safetensors::SafeTensors;

/// Kiln against PyTorch: the same f32 operations in other orders (PyTorch's CPU kernels fuse
/// and vectorise differently), compounded over 32 updates. Measured worst on lavapipe and the
/// CPU device: see the note where it is used.
const PYTORCH: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 2e-5,
};

const EPOCHS: usize = 8;
const UPDATES: usize = 32;

fn fixture_bytes() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_epochs.safetensors");
    std::fs::read(path).unwrap()
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data())
}

fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data())
}

/// A scratch directory with the fixture's data as safetensors files and its initial weights.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-epochs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = fixture_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (file, x, y) in [
        ("train.safetensors", "x_train", "y_train"),
        ("val.safetensors", "x_val", "y_val"),
    ] {
        let (tx, ty) = (st.tensor(x).unwrap(), st.tensor(y).unwrap());
        let data = [("x", tx), ("y", ty)];
        safetensors::serialize_to_file(data, None, &dir.join(file)).unwrap();
    }
    let run = RunConfig::from_toml(&run_text("kind = \"fixed\"", ""), "run").unwrap();
    let model = run.model(4).unwrap();
    let layout = model.param_layout(PARAM_ALIGN);
    let mut init = vec![0.0; layout.len];
    weights::read_into(&st, &layout, weights::Prefix::Arena("init."), &mut init).unwrap();
    weights::save(&dir.join("init.safetensors"), &layout, &init, None).unwrap();
    dir
}

fn run_text(schedule: &str, train: &str) -> String {
    format!(
        r#"
[model]
layers = [{{ dense = 8 }}, "tanh", {{ dense = 3 }}]
loss = "cross_entropy"
[data]
path = "train.safetensors"
validation_path = "val.safetensors"
shuffle = false
[optimizer]
lr = 0.1
momentum = 0.9
[schedule]
{schedule}
[train]
epochs = 8
batch_size = 16
{train}
"#
    )
}

/// The fixture's case as a `[schedule]` table with interval "epoch".
fn schedule_of(case: &serde_json::Value) -> String {
    let a = &case["args"];
    let body = match case["scheduler"].as_str().unwrap() {
        "StepLR" => format!(
            "kind = \"step\"\nstep_size = {}\ngamma = {}",
            a["step_size"], a["gamma"]
        ),
        "MultiStepLR" => format!(
            "kind = \"multi_step\"\nmilestones = {}\ngamma = {}",
            a["milestones"], a["gamma"]
        ),
        "CosineAnnealingLR" => format!(
            "kind = \"cosine_annealing\"\nt_max = {}\neta_min = {}",
            a["T_max"], a["eta_min"]
        ),
        "ExponentialLR" => format!("kind = \"exponential\"\ngamma = {}", a["gamma"]),
        "ReduceLROnPlateau" => {
            let mut t = format!(
                "kind = \"reduce_on_plateau\"\nmode = {}\nfactor = {}\npatience = {}",
                a["mode"], a["factor"], a["patience"]
            );
            if let Some(th) = a.get("threshold") {
                t += &format!("\nthreshold = {th}");
            }
            t + &format!("\nmonitor = {}", case["steps_on"])
        }
        other => panic!("no mapping for {other}"),
    };
    format!("interval = \"epoch\"\n{body}")
}

struct Trace {
    lrs: Vec<f64>,
    val_loss: Vec<f32>,
    val_accuracy: Vec<f64>,
    train_loss: Vec<f64>,
    losses: Vec<f32>,
    params: Vec<f32>,
}

fn train(dir: &Path, text: &str, device: &Device) -> Trace {
    let config = RunConfig::from_toml(text, "run.toml").unwrap();
    let init = dir.join("init.safetensors");
    let mut run = Run::new(config, dir, device, Some(&init), None).unwrap();
    let mut t = Trace {
        lrs: Vec::new(),
        val_loss: Vec::new(),
        val_accuracy: Vec::new(),
        train_loss: Vec::new(),
        losses: Vec::new(),
        params: Vec::new(),
    };
    while !run.finished() {
        let o = run.step().unwrap();
        t.lrs.push(o.lr);
        if let Some(e) = o.evaluation {
            t.val_loss.push(e.loss);
            t.val_accuracy.push(e.accuracy.unwrap());
        }
        t.train_loss.extend(o.train_loss);
    }
    t.losses = run.trainer.losses().unwrap().to_vec();
    t.params = run.trainer.parameters().unwrap();
    t
}

/// Every case of the fixture: the rate of every update equal to PyTorch's (bit for bit), each
/// epoch's validation accuracy equal, validation loss, batch losses, epoch mean loss and final
/// weights within float32 noise (worst measured on lavapipe and the CPU device: 1.8e-7 on
/// losses, 2.4e-7 on weights).
fn matches_pytorch(device: &Device) {
    let bytes = fixture_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let meta = SafeTensors::read_metadata(&bytes).unwrap().1;
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["cases"]).unwrap();
    assert_eq!(cases.len(), 7);
    let dir = data_dir(&format!("pytorch-{}", device.name().len()));
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let t = train(&dir, &run_text(&schedule_of(case), ""), device);
        assert_eq!(t.lrs, f64s(&st, &format!("{name}.lrs")), "{name}: rates");
        assert_eq!(t.lrs.len(), UPDATES);
        assert_eq!(
            t.val_accuracy,
            f64s(&st, &format!("{name}.val_accuracy")),
            "{name}: accuracy"
        );
        assert_eq!(t.val_loss.len(), EPOCHS);
        common::assert_close(
            &format!("{name} val_loss"),
            &t.val_loss,
            &f32s(&st, &format!("{name}.val_loss")),
            PYTORCH,
        );
        common::assert_close(
            &format!("{name} losses"),
            &t.losses,
            &f32s(&st, &format!("{name}.losses")),
            PYTORCH,
        );
        if case["steps_on"] == "train_loss" {
            let want: Vec<f32> = f64s(&st, &format!("{name}.epoch_train_loss"))
                .iter()
                .map(|&v| v as f32)
                .collect();
            let got: Vec<f32> = t.train_loss.iter().map(|&v| v as f32).collect();
            common::assert_close(&format!("{name} train_loss"), &got, &want, PYTORCH);
        }
        let model = RunConfig::from_toml(&run_text("kind = \"fixed\"", ""), "r")
            .unwrap()
            .model(4)
            .unwrap();
        let layout = model.param_layout(PARAM_ALIGN);
        for (tensor, shape, offset) in weights::tensors(&layout, "") {
            let n: usize = shape.iter().product();
            common::assert_close(
                &format!("{name} {tensor}"),
                &t.params[offset..offset + n],
                &f32s(&st, &format!("{name}.{tensor}")),
                PYTORCH,
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
test_device!(per_epoch_schedules_follow_pytorch, super::matches_pytorch);

/// Stopping mid-epoch and at an epoch's end, checkpointing and resuming gives the very bits
/// of an uninterrupted run, with a per-epoch plateau on the validation loss, a train-loss
/// monitor's partial epoch, and early stopping's counters and kept weights.
fn resume_is_exact(device: &Device) {
    let dir = data_dir(&format!("resume-{}", device.name().len()));
    let cases = [
        (
            "interval = \"epoch\"\nkind = \"reduce_on_plateau\"\nfactor = 0.5\npatience = 0\nthreshold = 0.3\nmonitor = \"val_loss\"",
            "early_stopping = { monitor = \"val_accuracy\", patience = 2, restore_best = true }",
        ),
        (
            "interval = \"epoch\"\nkind = \"reduce_on_plateau\"\nfactor = 0.5\npatience = 0\nthreshold = 0.25\nmonitor = \"train_loss\"",
            "eval_every = 3",
        ),
    ];
    for (schedule, train_extra) in cases {
        let text = run_text(schedule, train_extra);
        let whole = train(&dir, &text, device);
        for stop_at in [6u64, 8] {
            let config = RunConfig::from_toml(&text, "run.toml").unwrap();
            let init = dir.join("init.safetensors");
            let mut run = Run::new(config, &dir, device, Some(&init), None).unwrap();
            let mut lrs = Vec::new();
            while run.steps_done() < stop_at && !run.finished() {
                lrs.push(run.step().unwrap().lr);
            }
            let ck = dir.join(format!("ck-{stop_at}"));
            run.checkpoint(&ck).unwrap();
            drop(run);
            let config = RunConfig::from_toml(&text, "run.toml").unwrap();
            let mut run = Run::resume(config, &dir, device, &ck, None).unwrap();
            while !run.finished() {
                lrs.push(run.step().unwrap().lr);
            }
            assert_eq!(lrs, whole.lrs, "{schedule} stopped at {stop_at}: rates");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let params = run.trainer.parameters().unwrap();
            assert_eq!(
                bits(&params),
                bits(&whole.params),
                "{schedule} at {stop_at}"
            );
            // Early stopping's kept weights came through the checkpoint too.
            let restored = run.finish().unwrap();
            assert_eq!(restored.is_some(), train_extra.contains("restore_best"));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
test_device!(
    resume_is_bit_exact_for_epoch_schedules,
    super::resume_is_exact
);

/// Keras's EarlyStopping: the first check sets the best; after `patience` checks without an
/// improvement larger than `min_delta` (and never on the first check) the run stops; with
/// `restore_best` the run ends on the best check's weights.
fn early_stopping_follows_keras(device: &Device) {
    let dir = data_dir(&format!("early-{}", device.name().len()));
    // No epoch improves the mean batch loss by 10: the second check stops the run.
    let text = run_text(
        "kind = \"fixed\"",
        "early_stopping = { monitor = \"train_loss\", min_delta = 10.0, patience = 1, restore_best = true }",
    );
    let config = RunConfig::from_toml(&text, "run.toml").unwrap();
    let init = dir.join("init.safetensors");
    let mut run = Run::new(config, &dir, device, Some(&init), None).unwrap();
    let mut stops = Vec::new();
    while !run.finished() {
        let o = run.step().unwrap();
        assert_eq!(o.train_loss.is_some(), run.steps_done().is_multiple_of(4));
        stops.extend(o.stopped);
    }
    assert_eq!(run.steps_done(), 8, "stopped after the second epoch");
    let stop = &stops[..];
    assert_eq!(stop.len(), 1);
    assert_eq!((stop[0].best_step, stop[0].wait), (4, 1), "{stop:?}");
    assert_eq!(stop[0].monitor, "train_loss");
    assert!(
        stop[0].reason().contains("train_loss did not improve"),
        "{}",
        stop[0].reason()
    );
    assert_eq!(run.finish().unwrap(), Some(4));
    // The kept weights are those after the first epoch.
    let one_epoch = RunConfig::from_toml(
        &run_text("kind = \"fixed\"", "").replace("epochs = 8", "epochs = 1"),
        "r",
    )
    .unwrap();
    let mut first = Run::new(one_epoch, &dir, device, Some(&init), None).unwrap();
    while !first.finished() {
        first.step().unwrap();
    }
    assert_eq!(
        run.trainer.parameters().unwrap(),
        first.trainer.parameters().unwrap()
    );

    // A metric that keeps improving never stops the run; patience counts checks, not updates.
    let text = run_text(
        "kind = \"fixed\"",
        "early_stopping = { monitor = \"val_loss\", patience = 3 }\neval_every = 2",
    );
    let config = RunConfig::from_toml(&text, "run.toml").unwrap();
    let mut run = Run::new(config, &dir, device, Some(&init), None).unwrap();
    let mut evaluations = 0;
    while !run.finished() {
        evaluations += run.step().unwrap().evaluation.is_some() as usize;
    }
    assert!(run.stopped().is_none());
    assert_eq!((run.steps_done(), evaluations), (32, 16));
    std::fs::remove_dir_all(&dir).unwrap();
}
test_device!(
    early_stopping_is_kerass,
    super::early_stopping_follows_keras
);

/// Run files whose schedule, monitors and data do not fit together are refused, naming the key.
#[test]
fn mismatched_intervals_monitors_and_data_are_refused() {
    let dir = data_dir("errors");
    let plateau = "kind = \"reduce_on_plateau\"";
    for (schedule, train, data, wanted) in [
        (
            format!("{plateau}\nmonitor = \"val_loss\""),
            "",
            "",
            "schedule.monitor: \"val_loss\" is measured once per epoch",
        ),
        (
            format!("interval = \"epoch\"\n{plateau}"),
            "",
            "",
            "schedule.monitor: with interval = \"epoch\"",
        ),
        (
            format!("interval = \"epoch\"\n{plateau}\nmonitor = \"val_accuracy\""),
            "",
            "",
            "schedule.mode: val_accuracy rises",
        ),
        (
            "interval = \"epoch\"\nkind = \"loss_adaptive\"\nbeta = 1\nmonitor = \"val_accuracy\""
                .into(),
            "",
            "",
            "treats what it watches as a loss",
        ),
        (
            "interval = \"epoch\"\nkind = \"grad_norm_adaptive\"\nbeta = 1".into(),
            "",
            "",
            "schedule.interval",
        ),
        (
            "kind = \"step\"\nstep_size = 2\nmonitor = \"loss\"".into(),
            "",
            "",
            "does not watch a metric",
        ),
        (
            "interval = \"weekly\"\nkind = \"fixed\"".into(),
            "",
            "",
            "schedule.interval: expected \"update\" or \"epoch\"",
        ),
        (
            format!("interval = \"epoch\"\n{plateau}\nmonitor = \"val_loss\""),
            "",
            "validation_path = \"val.safetensors\"\n",
            "monitor \"val_loss\" needs validation rows",
        ),
        (
            "kind = \"fixed\"".into(),
            "early_stopping = { monitor = \"loss\" }",
            "",
            "train.early_stopping.monitor",
        ),
        (
            "kind = \"fixed\"".into(),
            "early_stopping = { patience = 2, min_delta = -1 }",
            "",
            "train.early_stopping.min_delta",
        ),
        (
            "kind = \"fixed\"".into(),
            "early_stopping = { monitor = \"val_accuracy\", mode = \"min\", restore_best = true }",
            "",
            "train.early_stopping.mode: val_accuracy rises",
        ),
        (
            "kind = \"fixed\"".into(),
            "early_stopping = { monitor = \"train_loss\", mode = \"max\" }",
            "",
            "train.early_stopping.mode: train_loss falls",
        ),
        (
            "kind = \"fixed\"".into(),
            "early_stopping = { pateince = 2 }",
            "",
            "unknown field `pateince`",
        ),
        (
            "kind = \"fixed\"".into(),
            "eval_every = 0",
            "",
            "train.eval_every",
        ),
        (
            "kind = \"fixed\"".into(),
            "eval_every = \"week\"",
            "",
            "train.eval_every",
        ),
        (
            "kind = \"fixed\"".into(),
            "",
            "validation = 0.2\n",
            "not both",
        ),
        (
            "kind = \"fixed\"".into(),
            "",
            "validation = 1.5\n",
            "data.validation: the held-out fraction must be in [0, 1)",
        ),
    ] {
        let mut text = run_text(&schedule, train);
        if data.starts_with("validation_path") {
            // The validation set taken away.
            text = text.replace(data, "");
        } else {
            text = text.replace("shuffle = false\n", &format!("shuffle = false\n{data}"));
        }
        let e = match RunConfig::from_toml(&text, "run.toml") {
            Ok(config) => match Run::new(config, &dir, &Device::Cpu, None, None) {
                Ok(_) => panic!("accepted:\n{text}"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(e.contains(wanted), "{wanted:?} not in {e:?}\n{text}");
    }
    // A validation set whose width differs from the training rows', named.
    let bad = dir.join("bad.safetensors");
    let x = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 3], &[0u8; 12])
        .unwrap();
    let y =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &[0u8; 8]).unwrap();
    safetensors::serialize_to_file([("x", x), ("y", y)], None, &bad).unwrap();
    let text = run_text("kind = \"fixed\"", "").replace("val.safetensors", "bad.safetensors");
    let e = Run::new(
        RunConfig::from_toml(&text, "r").unwrap(),
        &dir,
        &Device::Cpu,
        None,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("3 features"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's `[schedule]` tables and `early_stopping` settings parse and pass their checks.
#[test]
fn the_readmes_epoch_examples_parse() {
    use serde::Deserialize;
    let readme = include_str!("../README.md");
    let (mut schedules, mut stops) = (0, 0);
    for block in readme.split("```toml\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        let doc: toml::Table = toml::from_str(block).unwrap_or_else(|e| panic!("{block}: {e}"));
        if let Some(table) = doc.get("schedule").and_then(|t| t.as_table()) {
            kiln::schedule::ScheduleConfig::from_table(table.clone())
                .unwrap_or_else(|e| panic!("{block}: {e}"));
            schedules += 1;
        }
        if let Some(es) = doc.get("train").and_then(|t| t.get("early_stopping")) {
            kiln::run::EarlyStoppingConfig::deserialize(es.clone())
                .unwrap_or_else(|e| panic!("{block}: {e}"));
            stops += 1;
        }
    }
    assert!(
        schedules >= 3 && stops >= 2,
        "{schedules} schedules, {stops} early stops"
    );
}

/// With non-finite updates skipped, an epoch's `train_loss` is the mean of the updates that
/// happened, so a per-epoch schedule watching it keeps going.
#[test]
fn skipped_updates_are_left_out_of_the_epoch_mean() {
    let dir = std::env::temp_dir().join(format!("kiln-epochs-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Row 5's squared error overflows f32: its batch (rows 4 and 5) has an infinite loss.
    let csv = "x,y\n0.1,0.2\n0.2,0.4\n0.3,0.6\n0.4,0.8\n0.5,1.0\n1e30,1.2\n0.7,1.4\n0.8,1.6\n";
    std::fs::write(dir.join("d.csv"), csv).unwrap();
    let text = r#"
[model]
layers = [{ dense = 1 }]
loss = "mse"
[data]
path = "d.csv"
shuffle = false
[optimizer]
lr = 0.1
[schedule]
interval = "epoch"
kind = "reduce_on_plateau"
monitor = "train_loss"
[train]
epochs = 3
batch_size = 2
"#;
    let config = RunConfig::from_toml(text, "run.toml").unwrap();
    let mut run = Run::new(config, &dir, &Device::Cpu, None, None).unwrap();
    run.trainer.skip_non_finite_losses(true);
    let mut means = Vec::new();
    while !run.finished() {
        means.extend(run.step().unwrap().train_loss);
    }
    let losses = run.trainer.losses().unwrap().to_vec();
    assert!(!losses[2].is_finite() && losses.iter().filter(|l| l.is_finite()).count() == 9);
    assert_eq!(means.len(), 3);
    let first: f64 = [0, 1, 3].iter().map(|&i| losses[i] as f64).sum::<f64>() / 3.0;
    assert_eq!(means[0], first);
    std::fs::remove_dir_all(&dir).unwrap();
}
