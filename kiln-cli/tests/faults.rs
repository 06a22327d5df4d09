//! The fault suite: `kiln` run on broken inputs of every kind — run files, data files, weights,
//! checkpoints, output paths, schedules and plots with extreme values — as a hostile user
//! would. Each must end with exit status 1 and a message naming what is wrong and where,
//! within a time limit (no hang), without a panic, and without touching the files already
//! there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

/// How long any one faulty run may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `kiln args` in `dir`, killing it past [`LIMIT`].
fn run(dir: &Path, args: &[&str]) -> Outcome {
    let mut child = common::kiln_command(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return Outcome {
                code: status.code(),
                stderr,
            };
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("kiln {args:?} hung (over {LIMIT:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a clean failure: status 1, every expected fragment in the message, no panic.
fn fails(dir: &Path, args: &[&str], wanted: &[&str]) {
    let o = run(dir, args);
    assert!(
        !o.stderr.contains("panicked") && o.code == Some(1),
        "kiln {args:?}: status {:?}\n{}",
        o.code,
        o.stderr
    );
    for w in wanted {
        assert!(
            o.stderr.contains(w),
            "kiln {args:?}: {w:?} not in\n{}",
            o.stderr
        );
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const DATA: &str = "x0,x1,y\n0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,2\n0.7,0.4,1\n0.2,0.8,0\n0.9,0.6,2\n";

fn run_file(model: &str, data: &str, optimizer: &str, schedule: &str, train: &str) -> String {
    format!(
        "[model]\n{model}\n[data]\n{data}\n[optimizer]\n{optimizer}\n[schedule]\n{schedule}\n[train]\n{train}\n"
    )
}

const MODEL: &str = "layers = [{ dense = 4 }, \"tanh\", { dense = 3 }]\nloss = \"cross_entropy\"";
const DATA_CFG: &str = "path = \"d.csv\"\nvalidation = 0.34";
const OPT: &str = "lr = 0.1\nmomentum = 0.9";
const SCHEDULE: &str = "kind = \"step\"\nstep_size = 2";
const TRAIN: &str = "steps = 4\nbatch_size = 2";
const ONE_CYCLE: &str = "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 10";

/// Run files whose every kind of mistake is named by its key.
#[test]
fn bad_run_files() {
    let dir = scratch("run");
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("[model\nlayers = 1".into(), vec!["r.toml", "line 1"]),
        // A one_cycle shorter than the run: refused at start-up, not at update 3.
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 2",
                TRAIN,
            ),
            vec![
                "invalid schedule",
                "no rate for update 3 of the run's 4 updates",
                "past total_steps = 2",
            ],
        ),
        (
            run_file(
                MODEL,
                "path = \"d.csv\"\nvalidation = -0.5",
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["data.validation", "[0, 1)"],
        ),
        (
            run_file(
                MODEL,
                "path = \"d.csv\"\nvalidation = nan",
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["data.validation"],
        ),
        (
            run_file(MODEL, "path = \"\"", OPT, SCHEDULE, TRAIN),
            vec!["data.path", "empty"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                SCHEDULE,
                &format!("{TRAIN}\nclip_grad_norm = nan"),
            ),
            vec!["train.clip_grad_norm", "finite and > 0"],
        ),
        (
            run_file(
                MODEL,
                "source = \"digits\"\nheader = true",
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["data.header", "applies to CSV files", "bundled dataset"],
        ),
        (
            run_file(
                MODEL,
                "path = \"d.csv\"\nvalidation = 0.01",
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["data.validation", "holds out none"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                SCHEDULE,
                "epochs = 9223372036854775807\nbatch_size = 1",
            ),
            vec!["train.epochs", "more updates than can be counted"],
        ),
        (
            run_file(MODEL, DATA_CFG, OPT, SCHEDULE, "steps = 0"),
            vec!["train.steps", "at least 1"],
        ),
        (
            run_file(
                "layers = [{ dense = 4611686018427387904 }, { dense = 3 }]\nloss = \"cross_entropy\"",
                DATA_CFG,
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["model.layers[0]", "more parameters than can be counted"],
        ),
        (
            run_file(
                "layers = [{ dense = 2000000000 }, { dense = 3 }]\nloss = \"cross_entropy\"",
                DATA_CFG,
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["host memory", "this machine has"],
        ),
        (
            run_file(
                "layers = [{ dense = 3 }]\nloss = \"bce\"",
                DATA_CFG,
                OPT,
                SCHEDULE,
                TRAIN,
            ),
            vec!["model.loss", "sigmoid"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                "kind = \"cosine_annealing\"\nt_max = -5",
                TRAIN,
            ),
            vec!["schedule.t_max"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                "kind = \"loss_milestones\"\nthresholds = [1.0]\nfactor = 2.0",
                TRAIN,
            ),
            vec!["schedule.factor", "(0, 1]"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                OPT,
                "kind = \"bold_driver\"\ndecrease = 1.5",
                TRAIN,
            ),
            vec!["schedule.decrease"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                "kind = \"adam\"\nbetas = [0.9, 2.0]",
                SCHEDULE,
                TRAIN,
            ),
            vec!["optimizer.betas"],
        ),
        (
            run_file(
                MODEL,
                DATA_CFG,
                "kind = \"rmsprop\"\nmomentun = 0.9",
                SCHEDULE,
                TRAIN,
            ),
            vec!["optimizer.momentun", "unknown field"],
        ),
        (
            run_file(MODEL, DATA_CFG, OPT, SCHEDULE, "steps = 4\neval_every = 0"),
            vec!["train.eval_every"],
        ),
        (
            run_file(
                MODEL,
                "path = \"d.csv\"",
                OPT,
                "interval = \"epoch\"\nkind = \"reduce_on_plateau\"\nmonitor = \"val_loss\"",
                TRAIN,
            ),
            vec!["schedule.monitor", "validation rows"],
        ),
    ];
    for (text, wanted) in &cases {
        std::fs::write(dir.join("r.toml"), text).unwrap();
        fails(&dir, &["train", "r.toml", "--device", "cpu"], wanted);
    }
    // A header given as a TOML boolean, as the README shows it, is accepted.
    std::fs::write(
        dir.join("r.toml"),
        run_file(
            MODEL,
            "path = \"d.csv\"\nheader = true",
            OPT,
            SCHEDULE,
            TRAIN,
        ),
    )
    .unwrap();
    let o = run(&dir, &["train", "r.toml", "--device", "cpu", "--quiet"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Broken data files: each names the file and the line, row or byte.
#[test]
fn bad_data_files() {
    let dir = scratch("data");
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "a.csv",
            b"x0,x1,y\n1,2,0\n3,4\n".to_vec(),
            vec!["a.csv", "line 3", "2 fields, expected 3"],
        ),
        (
            "b.csv",
            b"x0,x1,y\n1,2,0\n3,four,1\n".to_vec(),
            vec!["b.csv", "line 3", "not a number"],
        ),
        (
            "c.csv",
            b"x0,x1,y\n1,2,0\n3,4,7\n".to_vec(),
            vec!["c.csv, line 3", "label 7"],
        ),
        ("d.safetensors", b"garbage".to_vec(), vec!["d.safetensors"]),
        // Read as safetensors whatever the case of the extension (not as text).
        (
            "D.SAFETENSORS",
            b"garbage".to_vec(),
            vec!["D.SAFETENSORS", "safetensors"],
        ),
        ("e.csv", b"".to_vec(), vec!["e.csv", "no data rows"]),
    ];
    for (file, bytes, wanted) in &cases {
        std::fs::write(dir.join(file), bytes).unwrap();
        let text = run_file(
            MODEL,
            &format!("path = \"{file}\"\nshuffle = true"),
            OPT,
            SCHEDULE,
            TRAIN,
        );
        std::fs::write(dir.join("r.toml"), text).unwrap();
        fails(&dir, &["train", "r.toml", "--device", "cpu"], wanted);
    }
    // A byte-order mark is not data: the headerless file keeps its first row.
    std::fs::write(
        dir.join("bom.csv"),
        "\u{feff}0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,2\n",
    )
    .unwrap();
    let text = run_file(
        MODEL,
        "path = \"bom.csv\"\nheader = false",
        OPT,
        SCHEDULE,
        "steps = 1\nbatch_size = 3",
    );
    std::fs::write(dir.join("r.toml"), text).unwrap();
    let o = run(&dir, &["train", "r.toml", "--device", "cpu", "--quiet"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // An MNIST directory without its files.
    std::fs::create_dir_all(dir.join("mnist")).unwrap();
    let text = run_file(
        "layers = [{ dense = 10 }]\nloss = \"cross_entropy\"",
        "path = \"mnist\"",
        OPT,
        SCHEDULE,
        TRAIN,
    );
    std::fs::write(dir.join("r.toml"), text).unwrap();
    fails(
        &dir,
        &["train", "r.toml", "--device", "cpu"],
        &["mnist", "no train-images-idx3-ubyte"],
    );
    // A device that never ends is refused, not read into memory without end: as data, as
    // the run file, as a log to plot, as weights to start from.
    #[cfg(unix)]
    {
        let text = run_file(MODEL, "path = \"/dev/zero\"", OPT, SCHEDULE, TRAIN);
        std::fs::write(dir.join("r.toml"), text).unwrap();
        let not_regular = ["/dev/zero", "not a regular file"];
        fails(&dir, &["train", "r.toml", "--device", "cpu"], &not_regular);
        fails(
            &dir,
            &["train", "/dev/zero", "--device", "cpu"],
            &not_regular,
        );
        fails(&dir, &["plot", "/dev/zero", "-o", "p.png"], &not_regular);
        fails(
            &dir,
            &["schedule", "/dev/zero", "--steps", "2"],
            &not_regular,
        );
        std::fs::write(
            dir.join("r.toml"),
            run_file(MODEL, DATA_CFG, OPT, SCHEDULE, TRAIN),
        )
        .unwrap();
        std::fs::write(dir.join("d.csv"), DATA).unwrap();
        fails(
            &dir,
            &["train", "r.toml", "--device", "cpu", "--init", "/dev/zero"],
            &not_regular,
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small good run whose checkpoint the other tests break.
fn good_run(dir: &Path, schedule: &str) {
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    let text = run_file(MODEL, DATA_CFG, OPT, schedule, TRAIN);
    std::fs::write(dir.join("r.toml"), text).unwrap();
    let o = run(
        dir,
        &[
            "train",
            "r.toml",
            "--device",
            "cpu",
            "--quiet",
            "--checkpoint-dir",
            "ck",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

/// An optimizer's scalar state that its updates under the run file's schedule would not leave
/// (NAdam's `mu_product`, ASGD's `eta`) is refused; the state as it was resumes.
#[test]
fn a_resume_is_held_to_its_optimizer_scalars() {
    let dir = scratch("scalars");
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    for (optimizer, key, value) in [
        ("kind = \"nadam\"", "mu_product", 0.0),
        ("kind = \"asgd\"", "eta", 0.5),
    ] {
        let _ = std::fs::remove_dir_all(dir.join("ck"));
        let text = run_file(MODEL, DATA_CFG, optimizer, SCHEDULE, TRAIN);
        std::fs::write(dir.join("r.toml"), text).unwrap();
        let o = run(
            &dir,
            &[
                "train",
                "r.toml",
                "--device",
                "cpu",
                "--quiet",
                "--checkpoint-dir",
                "ck",
            ],
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        let resume = [
            "train", "r.toml", "--device", "cpu", "--resume", "ck", "--steps", "6",
        ];
        let pristine = std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap();
        tamper(&dir, |m| {
            m["trainer"]["optimizer"]["scalars"][key] = value.into();
        });
        fails(
            &dir,
            &resume,
            &["checkpoint.safetensors", "optimizer's scalar state", key],
        );
        std::fs::write(dir.join("ck/checkpoint.safetensors"), pristine).unwrap();
        let o = run(&dir, &resume);
        assert_eq!(o.code, Some(0), "{optimizer}: {}", o.stderr);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrites the checkpoint's JSON state with `edit`, keeping its tensors.
fn tamper(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("ck/checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["kiln.checkpoint"]).unwrap();
    edit(&mut meta);
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().collect();
    let out = safetensors::serialize(
        tensors,
        Some([("kiln.checkpoint".to_string(), meta.to_string())].into()),
    )
    .unwrap();
    std::fs::write(&path, out).unwrap();
}

/// Checkpoints broken in their bytes or their state: refused naming the file or the field,
/// before a trainer is built, never a panic.
#[test]
fn bad_checkpoints() {
    let dir = scratch("ck");
    let resume = [
        "train", "r.toml", "--device", "cpu", "--resume", "ck", "--steps", "6",
    ];
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["schedule"]["schedule"]["rule"]["step_size"] = 0.into()),
            vec!["checkpoint.schedule", "step_size"],
        ),
        (
            "kind = \"sequential\"\nmilestones = [2]\nschedules = [{ kind = \"fixed\" }, { kind = \"fixed\" }]",
            Box::new(|m| m["trainer"]["schedule"]["schedule"]["schedules"] = serde_json::json!([])),
            vec!["checkpoint.schedule", "at least one schedule"],
        ),
        (
            "kind = \"reduce_on_plateau\"",
            Box::new(|m| m["trainer"]["observations"] = serde_json::json!([])),
            vec!["checkpoint.trainer.observations"],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["optimizer"]["name"] = "adam".into()),
            vec!["checkpoint.optimizer", "\"adam\"", "\"sgd\""],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["optimizer"]["scalars"]["step"] = serde_json::json!(null)),
            vec!["checkpoint.ck"],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["format"] = 99.into()),
            vec!["checkpoint format 99"],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["optimizer"]["scalars"]["step"] = (-1.0).into()),
            vec![
                "checkpoint.safetensors",
                "checkpoint.optimizer.scalars.step",
            ],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["state_blocks"] = serde_json::json!(["a", "b", "c", "d"])),
            vec!["checkpoint.safetensors", "state_blocks"],
        ),
        // Counters that disagree with each other, each in range on its own.
        (
            SCHEDULE,
            Box::new(|m| m["format"] = 0.into()),
            vec!["checkpoint.safetensors", "format 0"],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["optimizer"]["scalars"]["step"] = 3.0.into()),
            vec![
                "checkpoint.optimizer.scalars.step",
                "3 but the trainer made 4 updates",
            ],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["schedule"]["updates"] = 1.into()),
            vec!["checkpoint.schedule", "stepped 1 times", "it steps 4"],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["epoch"] = 7.into()),
            vec![
                "checkpoint.safetensors",
                "epoch 7, but update 4 is in epoch 2",
            ],
        ),
        (
            SCHEDULE,
            Box::new(|m| m["run"]["epoch_losses"] = serde_json::json!([0.5])),
            vec![
                "checkpoint.safetensors",
                "1 losses of the current epoch, but 0",
            ],
        ),
        // Counters, bounds and rates the run file's schedule would not have after its steps.
        (
            SCHEDULE,
            Box::new(|m| m["trainer"]["schedule"]["schedule"]["last_epoch"] = 5.into()),
            vec![
                "checkpoint.safetensors",
                "not the run file's after the 4 steps",
            ],
        ),
        (
            ONE_CYCLE,
            Box::new(|m| m["trainer"]["schedule"]["group"]["max_lr"] = 0.3.into()),
            vec![
                "checkpoint.safetensors",
                "not the run file's after the 4 steps",
            ],
        ),
        (
            ONE_CYCLE,
            Box::new(|m| m["trainer"]["schedule"]["group"]["lr"] = 0.05.into()),
            vec![
                "checkpoint.safetensors",
                "not the run file's after the 4 steps",
            ],
        ),
        // A cycle dropped from a momentum-cycling schedule's state, consistently: the run
        // file (and the checkpoint's record of it) cycles momentum.
        (
            ONE_CYCLE,
            Box::new(|m| {
                let s = &mut m["trainer"]["schedule"];
                s["schedule"]["rule"]["momentum"] = serde_json::Value::Null;
                for key in ["momentum", "max_momentum", "base_momentum"] {
                    s["group"][key] = serde_json::Value::Null;
                }
            }),
            vec![
                "checkpoint.safetensors",
                "does not cycle momentum, the run file's does",
            ],
        ),
        (
            ONE_CYCLE,
            Box::new(|m| m["trainer"]["schedule"]["group"]["max_momentum"] = (-0.5).into()),
            vec![
                "checkpoint.schedule",
                "max_momentum",
                "must be finite and >= 0",
            ],
        ),
    ];
    for (schedule, edit, wanted) in &cases {
        let _ = std::fs::remove_dir_all(dir.join("ck"));
        good_run(&dir, schedule);
        tamper(&dir, edit);
        let before = std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap();
        let wanted: Vec<&str> = wanted
            .iter()
            .map(|w| {
                if *w == "checkpoint.ck" {
                    "checkpoint.safetensors"
                } else {
                    w
                }
            })
            .collect();
        fails(&dir, &resume, &wanted);
        // A refused checkpoint is left as it was.
        assert_eq!(
            std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap(),
            before
        );
    }
    // A checkpoint from before the epoch layout was recorded, saved mid-epoch without the
    // run's state (the epoch's losses): still resumes.
    let _ = std::fs::remove_dir_all(dir.join("ck"));
    good_run(&dir, SCHEDULE);
    let mid = run(
        &dir,
        &[
            "train", "r.toml", "--device", "cpu", "--quiet", "--resume", "ck", "--steps", "5",
        ],
    );
    assert_eq!(mid.code, Some(0), "{}", mid.stderr);
    tamper(&dir, |m| {
        m["run"].as_object_mut().unwrap().remove("setup");
        m["run"]["epoch_losses"] = serde_json::json!([]);
    });
    let old = run(
        &dir,
        &[
            "train", "r.toml", "--device", "cpu", "--quiet", "--resume", "ck", "--steps", "6",
        ],
    );
    assert_eq!(old.code, Some(0), "{}", old.stderr);
    // A resume under another epoch layout, or with nothing left to train, is refused.
    let _ = std::fs::remove_dir_all(dir.join("ck"));
    good_run(&dir, SCHEDULE);
    fails(
        &dir,
        &[
            "train", "r.toml", "--device", "cpu", "--resume", "ck", "--steps", "3",
        ],
        &["train.steps", "at update 4, past the 3"],
    );
    // At the run's end: it finishes (and saves) without an update.
    let o = run(
        &dir,
        &[
            "train",
            "r.toml",
            "--device",
            "cpu",
            "--quiet",
            "--resume",
            "ck",
            "--steps",
            "4",
            "--save",
            "w4.safetensors",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(dir.join("w4.safetensors").exists());
    let text = run_file(MODEL, DATA_CFG, OPT, SCHEDULE, "steps = 4\nbatch_size = 1");
    std::fs::write(dir.join("r1.toml"), text).unwrap();
    fails(
        &dir,
        &[
            "train", "r1.toml", "--device", "cpu", "--resume", "ck", "--steps", "6",
        ],
        &["train.batch_size", "4 updates of 1 rows", "2 of 2 over 4"],
    );
    // Garbage bytes, and NaN in the weights: both name the file.
    let _ = std::fs::remove_dir_all(dir.join("ck"));
    good_run(&dir, SCHEDULE);
    std::fs::write(dir.join("ck/checkpoint.safetensors"), b"not a checkpoint").unwrap();
    fails(
        &dir,
        &resume,
        &["checkpoint.safetensors", "not a valid checkpoint"],
    );
    let _ = std::fs::remove_dir_all(dir.join("ck"));
    good_run(&dir, SCHEDULE);
    let path = dir.join("ck/checkpoint.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    // The last tensor's last value (the data section ends the file) becomes NaN.
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    fails(
        &dir,
        &resume,
        &["checkpoint.safetensors", "non-finite value (NaN)"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Output paths that cannot be written fail before the first update; a failed write leaves
/// the earlier file whole; a checkpoint directory in use is refused.
#[test]
fn bad_outputs() {
    let dir = scratch("out");
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    std::fs::write(
        dir.join("r.toml"),
        run_file(MODEL, DATA_CFG, OPT, SCHEDULE, TRAIN),
    )
    .unwrap();
    fn train<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["train", "r.toml", "--device", "cpu"];
        a.extend_from_slice(extra);
        a
    }
    fails(
        &dir,
        &train(&["--save", "nodir/w.safetensors"]),
        &["nodir/w.safetensors", "does not exist"],
    );
    std::fs::create_dir_all(dir.join("adir")).unwrap();
    fails(
        &dir,
        &train(&["--save", "adir"]),
        &["adir", "not a regular file"],
    );
    fails(
        &dir,
        &train(&["--save", "/dev/null"]),
        &["/dev/null", "not a regular file"],
    );
    // A link is not written through or replaced, even one to a regular file.
    #[cfg(unix)]
    {
        std::fs::write(dir.join("real.safetensors"), b"kept").unwrap();
        std::os::unix::fs::symlink("real.safetensors", dir.join("link.safetensors")).unwrap();
        fails(
            &dir,
            &train(&["--save", "link.safetensors"]),
            &["link.safetensors", "not a regular file"],
        );
        assert_eq!(
            std::fs::read(dir.join("real.safetensors")).unwrap(),
            b"kept"
        );
    }
    fails(
        &dir,
        &train(&["--resume", "nock"]),
        &["nock", "no checkpoint to resume from"],
    );
    fails(
        &dir,
        &train(&["--log", "r.toml"]),
        &["--log r.toml is also the run file"],
    );
    // A hard link is the file it links.
    #[cfg(unix)]
    {
        std::fs::hard_link(dir.join("r.toml"), dir.join("hl.jsonl")).unwrap();
        std::fs::hard_link(dir.join("d.csv"), dir.join("hd.jsonl")).unwrap();
        fails(
            &dir,
            &train(&["--log", "hl.jsonl"]),
            &["--log hl.jsonl is also the run file"],
        );
        fails(
            &dir,
            &train(&["--log", "hd.jsonl"]),
            &["--log hd.jsonl is also a data file of the run"],
        );
        assert_eq!(std::fs::read_to_string(dir.join("d.csv")).unwrap(), DATA);
    }
    // The data the run reads, named relative to the run file's folder.
    fails(
        &dir,
        &train(&["--save", "./d.csv"]),
        &["--save ./d.csv is also a data file of the run"],
    );
    assert_eq!(std::fs::read_to_string(dir.join("d.csv")).unwrap(), DATA);
    fails(
        &dir,
        &train(&[
            "--checkpoint-dir",
            "ck",
            "--save",
            "ck/checkpoint.safetensors",
        ]),
        &["is also the checkpoint"],
    );
    fails(
        &dir,
        &train(&["--save", "w.safetensors", "--save-best", "w.safetensors"]),
        &["is also --save-best"],
    );
    fails(
        &dir,
        &train(&["--resume", "a", "--checkpoint-dir", "b"]),
        &["--checkpoint-dir b would be ignored"],
    );
    fails(
        &dir,
        &train(&["--checkpoint-dir", "ck", "--checkpoint-every", "0"]),
        &["--checkpoint-every"],
    );
    // A plot that fails leaves the earlier image whole.
    std::fs::write(
        dir.join("big.toml"),
        "[schedule]\nlr = 1.7e308\nkind = \"fixed\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("p.png"), b"an earlier plot").unwrap();
    fails(
        &dir,
        &["schedule", "big.toml", "--steps", "5", "--plot", "p.png"],
        &["p.png", "too large to plot"],
    );
    fails(
        &dir,
        &["schedule", "big.toml", "--steps", "5", "--plot", "p.bmp"],
        &["p.bmp", "must end in .png or .svg"],
    );
    assert_eq!(
        std::fs::read(dir.join("p.png")).unwrap(),
        b"an earlier plot"
    );
    // A log of values near f64's limits: refused, not an endless axis.
    std::fs::write(
        dir.join("m.jsonl"),
        "{\"step\":0,\"epoch\":0,\"lr\":1e308,\"loss\":1.0}\n{\"step\":1,\"epoch\":0,\"lr\":-1e308,\"loss\":2.0}\n",
    )
    .unwrap();
    fails(
        &dir,
        &["plot", "m.jsonl", "-o", "m.png"],
        &["m.png", "too large to plot"],
    );
    // Updates at both ends of u64: plotted (the x axis's label count saturates).
    std::fs::write(
        dir.join("wide.jsonl"),
        "{\"step\":0,\"epoch\":0,\"lr\":0.1,\"loss\":1.0}\n{\"step\":18446744073709551615,\"epoch\":0,\"lr\":0.1,\"loss\":2.0}\n",
    )
    .unwrap();
    let o = run(&dir, &["plot", "wide.jsonl", "-o", "wide.png"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    fails(
        &dir,
        &["schedule", "big.toml", "--steps", "18446744073709551615"],
        &["--steps", "at most"],
    );
    // A checkpoint directory another run holds.
    let _lock = kiln::run::checkpoint::lock(&dir.join("held")).unwrap();
    fails(
        &dir,
        &train(&["--checkpoint-dir", "held"]),
        &["held", "another kiln run"],
    );
    // Temporary files a killed run left in a checkpoint directory go at the next start.
    let stale = dir.join("ck/.checkpoint.safetensors.tmp-4242");
    std::fs::create_dir_all(dir.join("ck")).unwrap();
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let o = run(&dir, &train(&["--checkpoint-dir", "ck", "--quiet"]));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!stale.exists() && dir.join("ck/checkpoint.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two identical runs write identical bytes, metadata included.
#[test]
fn identical_runs_write_identical_files() {
    let dir = scratch("same");
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    let data = "path = \"d.csv\"\nnormalize = \"standard\"";
    std::fs::write(
        dir.join("r.toml"),
        run_file(MODEL, data, OPT, SCHEDULE, TRAIN),
    )
    .unwrap();
    for name in ["a.safetensors", "b.safetensors"] {
        let o = run(
            &dir,
            &[
                "train", "r.toml", "--device", "cpu", "--quiet", "--save", name,
            ],
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr);
    }
    assert_eq!(
        std::fs::read(dir.join("a.safetensors")).unwrap(),
        std::fs::read(dir.join("b.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Output that cannot be written (a full disk, a closed pipe) ends the command with an error
/// saying so, not a panic.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_output_is_an_error_not_a_panic() {
    let dir = scratch("stdout");
    for args in [
        &["devices"][..],
        &["train", "--device", "cpu", "--steps", "2"],
        &["bench", "--device", "cpu", "--quick", "--ops", "copy"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = common::kiln_command(args)
            .current_dir(&dir)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1)
                && !stderr.contains("panicked")
                && stderr.contains("writing to standard output"),
            "kiln {args:?}: {:?}\n{stderr}",
            out.status
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Held-out rows far outside the training rows' range overflow the model's outputs: the error
/// names the first such row and what may cause it, not only "training diverged".
#[test]
fn validation_rows_that_overflow_are_named() {
    let dir = scratch("valflow");
    std::fs::write(dir.join("t.csv"), "1,2,0\n3,4,1\n0.5,-1,2\n").unwrap();
    std::fs::write(dir.join("v.csv"), "3,4,1\n1e30,2e30,0\n").unwrap();
    std::fs::write(
        dir.join("r.toml"),
        "[model]\nlayers = [{ dense = 1 }]\nloss = \"mse\"\n[data]\npath = \"t.csv\"\nvalidation_path = \"v.csv\"\n[optimizer]\nlr = 0.01\n[train]\nsteps = 3\nbatch_size = 2\n",
    )
    .unwrap();
    fails(
        &dir,
        &["train", "r.toml", "--device", "cpu"],
        &[
            "the validation loss (first at ",
            "v.csv, line 2) is inf",
            "outside the training rows' range",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A resume is held to the schedule the checkpoint's run started with, as configured: another
/// schedule is refused naming it; a checkpoint of an earlier version (no record) resumes, and
/// a schedule that keeps infinities in its state (reduce_on_plateau's best) resumes under the
/// same run file.
#[test]
fn a_resume_is_held_to_its_schedule() {
    let dir = scratch("resched");
    let plateau = "kind = \"reduce_on_plateau\"\npatience = 1";
    good_run(&dir, plateau);
    let resume = [
        "train", "r.toml", "--device", "cpu", "--resume", "ck", "--steps", "6",
    ];
    let o = run(&dir, &resume);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    std::fs::write(
        dir.join("r.toml"),
        run_file(MODEL, DATA_CFG, OPT, SCHEDULE, TRAIN),
    )
    .unwrap();
    let more = [
        "train", "r.toml", "--device", "cpu", "--resume", "ck", "--steps", "8",
    ];
    fails(
        &dir,
        &more,
        &["invalid schedule", "cannot change its schedule"],
    );
    tamper(&dir, |m| {
        m["run"].as_object_mut().unwrap().remove("schedule");
    });
    let o = run(&dir, &more);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}
