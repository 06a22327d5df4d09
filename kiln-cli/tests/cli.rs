//! The `kiln` binary as a user runs it: `kiln schedule` output, plots and errors.

mod common;

use std::path::PathBuf;
use std::process::Output;

fn kiln(args: &[&str]) -> Output {
    common::kiln(args, &[])
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr_of_failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

const RUN_FILE: &str =
    "[optimizer]\nlr = 0.1\n[schedule]\nkind = \"step\"\nstep_size = 2\ngamma = 0.5\n";

#[test]
fn schedule_prints_csv_with_one_row_per_update() {
    let f = scratch("step.toml", RUN_FILE);
    let out = stdout(&kiln(&["schedule", f.to_str().unwrap(), "--steps", "5"]));
    assert_eq!(out, "step,lr\n0,0.1\n1,0.1\n2,0.05\n3,0.05\n4,0.025\n");
}

#[test]
fn schedule_prints_json_in_shortest_round_trip_form() {
    let f = scratch(
        "exp.toml",
        "[schedule]\nkind = \"exponential\"\nlr = 1e-3\ngamma = 0.1\n",
    );
    let out = stdout(&kiln(&[
        "schedule",
        f.to_str().unwrap(),
        "--steps",
        "3",
        "--format",
        "json",
    ]));
    assert_eq!(out.trim(), "{\"lr\": [0.001, 0.0001, 1e-5]}");
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["lr"].as_array().unwrap().len(), 3);
}

#[test]
fn schedule_follows_observations() {
    let f = scratch(
        "plateau.toml",
        "[schedule]\nkind = \"reduce_on_plateau\"\nlr = 1\npatience = 1\n",
    );
    let obs = scratch("metrics.txt", "1\n0.9\n0.9\n0.9\n\n0.9\n0.9\n");
    let out = stdout(&kiln(&[
        "schedule",
        f.to_str().unwrap(),
        "--steps",
        "7",
        "--observations",
        obs.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(
        out.trim(),
        "{\"lr\": [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002]}"
    );
}

#[test]
fn schedule_errors_name_the_file_and_the_problem() {
    let f = scratch(
        "plateau2.toml",
        "[schedule]\nkind = \"reduce_on_plateau\"\nlr = 1\n",
    );
    let e = stderr_of_failure(&kiln(&["schedule", f.to_str().unwrap(), "--steps", "3"]));
    assert!(
        e.contains("plateau2.toml") && e.contains("--observations"),
        "{e}"
    );

    let bad = scratch("bad-metrics.txt", "1\nx\n");
    let e = stderr_of_failure(&kiln(&[
        "schedule",
        f.to_str().unwrap(),
        "--steps",
        "3",
        "--observations",
        bad.to_str().unwrap(),
    ]));
    assert!(
        e.contains("bad-metrics.txt, line 2: \"x\" is not a finite number"),
        "{e}"
    );

    let g = scratch("noschedule.toml", "[optimizer]\nlr = 0.1\n");
    let e = stderr_of_failure(&kiln(&["schedule", g.to_str().unwrap(), "--steps", "3"]));
    assert!(e.contains("noschedule.toml: no [schedule] table"), "{e}");

    let h = scratch(
        "tmax.toml",
        "[schedule]\nkind = \"cosine_annealing\"\nlr = 0.1\nt_max = 0\n",
    );
    let e = stderr_of_failure(&kiln(&["schedule", h.to_str().unwrap(), "--steps", "3"]));
    assert!(
        e.contains("tmax.toml: invalid schedule.t_max: must be at least 1"),
        "{e}"
    );

    let i = scratch(
        "onecycle.toml",
        "[schedule]\nkind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 3\n",
    );
    let e = stderr_of_failure(&kiln(&["schedule", i.to_str().unwrap(), "--steps", "6"]));
    assert!(e.contains("past total_steps = 3"), "{e}");
    assert!(
        stdout(&kiln(&["schedule", i.to_str().unwrap(), "--steps", "4"]))
            .lines()
            .count()
            == 5
    );
}

#[test]
fn schedule_plots_png_and_svg() {
    let f = scratch("plot.toml", RUN_FILE);
    for (name, magic) in [("lr.png", &b"\x89PNG"[..]), ("lr.svg", &b"<svg"[..])] {
        let out = f.with_file_name(name);
        stdout(&kiln(&[
            "schedule",
            f.to_str().unwrap(),
            "--steps",
            "50",
            "--plot",
            out.to_str().unwrap(),
        ]));
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes.starts_with(magic),
            "{name} does not start with {magic:?}"
        );
        assert!(bytes.len() > 2000, "{name} is suspiciously small");
    }
    let e = stderr_of_failure(&kiln(&[
        "schedule",
        f.to_str().unwrap(),
        "--steps",
        "5",
        "--plot",
        "/tmp/lr.gif",
    ]));
    assert!(e.contains("plot files must end in .png or .svg"), "{e}");
}

/// A run file and a CSV beside it, in a fresh directory.
fn run_dir(name: &str, csv: &str, run: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.csv"), csv).unwrap();
    std::fs::write(dir.join("run.toml"), run).unwrap();
    dir
}

/// y = 2·x₀ − x₁ + noise-free, 40 rows, with a header.
fn regression_csv() -> String {
    let mut s = String::from("x0,x1,y\n");
    for i in 0..40 {
        let (a, b) = ((i % 7) as f32 / 7.0, (i % 5) as f32 / 5.0);
        s += &format!("{a},{b},{}\n", 2.0 * a - b);
    }
    s
}

const REGRESSION_RUN: &str = r#"
[model]
layers = [{ dense = 8 }, "tanh", { dense = 1 }]
loss = "mse"
[data]
path = "data.csv"
validation = 0.25
[optimizer]
lr = 0.1
momentum = 0.9
[schedule]
kind = "step"
step_size = 10
gamma = 0.5
[train]
steps = 30
batch_size = 8
"#;

fn assert_same_file(a: &std::path::Path, b: &std::path::Path, what: &str) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{what}: {} and {} differ",
        a.display(),
        b.display()
    );
}

fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_logs_every_update_and_evaluation_and_plots_them() {
    let dir = run_dir("log", &regression_csv(), REGRESSION_RUN);
    let log = dir.join("m.jsonl");
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--log",
        arg(&log),
    ]));
    assert!(out.contains("device: CPU (--device cpu)"), "{out}");
    assert!(out.contains("validation: loss"), "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let updates: Vec<_> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(updates.len(), 30);
    for (t, l) in updates.iter().enumerate() {
        assert_eq!(l["step"], t as u64);
        // 30 training rows in batches of 8: 4 batches per epoch.
        assert_eq!(l["epoch"], (t / 4) as u64);
        assert_eq!(
            l["lr"].as_f64().unwrap(),
            0.1 * 0.5f64.powi((t / 10) as i32)
        );
    }
    let evals: Vec<_> = lines
        .iter()
        .filter(|l| l.get("val_loss").is_some())
        .collect();
    assert_eq!(
        evals.len(),
        8,
        "after each of 7 whole epochs, and at the end"
    );
    assert!(
        evals.iter().all(|e| e.get("val_accuracy").is_none()),
        "no accuracy for regression"
    );
    let png = dir.join("m.png");
    stdout(&kiln(&["plot", arg(&log), "-o", arg(&png)]));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let e = stderr_of_failure(&kiln(&[
        "plot",
        arg(&dir.join("run.toml")),
        "-o",
        arg(&png),
    ]));
    assert!(e.contains("run.toml, line 2: not JSON"), "{e}");
    let other = dir.join("other.jsonl");
    std::fs::write(&other, "{\"step\": 1, \"loss\": 0.5}\n").unwrap();
    let e = stderr_of_failure(&kiln(&["plot", arg(&other), "-o", arg(&png)]));
    assert!(
        e.contains("other.jsonl, line 1: not a line of a kiln --log file"),
        "{e}"
    );
    // The evaluations alone (`grep val_loss`), even a single one: the loss panel alone.
    let evals_only = dir.join("evals.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    for lines in [usize::MAX, 1] {
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("val_loss"))
            .take(lines)
            .collect();
        std::fs::write(&evals_only, kept.join("\n")).unwrap();
        std::fs::remove_file(&png).unwrap();
        stdout(&kiln(&["plot", arg(&evals_only), "-o", arg(&png)]));
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// For SGD and optimizers with other state (AdamW without bias decay and with clipping, NAdam
/// with its `mu_product`, centered RMSprop with momentum): a killed run resumed from its last
/// checkpoint saves the very bytes of an uninterrupted one, and its --log, continued, is the
/// uninterrupted run's: each update once, lines written past the checkpoint and the cut run's
/// end-of-run evaluation gone.
#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    for (name, optimizer) in [
        ("sgd", "lr = 0.1\nmomentum = 0.9"),
        (
            "adamw",
            "kind = \"adamw\"\nlr = 0.01\ndecay_biases = false\n[train]\nsteps = 30\nbatch_size = 8\nclip_grad_norm = 0.5",
        ),
        ("nadam", "kind = \"nadam\"\nlr = 0.01"),
        (
            "rmsprop",
            "kind = \"rmsprop\"\nlr = 0.01\ncentered = true\nmomentum = 0.5",
        ),
    ] {
        let mut text = REGRESSION_RUN.replace("lr = 0.1\nmomentum = 0.9", optimizer);
        if optimizer.contains("[train]") {
            // The optimizer's text brought its own [train] table.
            let at = text.rfind("[train]").unwrap();
            text.truncate(at);
        }
        killed_run_resumes(name, &text);
    }
}

fn killed_run_resumes(name: &str, run_text: &str) {
    let dir = run_dir(&format!("resume-{name}"), &regression_csv(), run_text);
    let (run, ck) = (dir.join("run.toml"), dir.join("ck"));
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let (log_a, log_b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    stdout(&kiln(&[
        "train",
        arg(&run),
        "--device",
        "cpu",
        "--quiet",
        "--save",
        arg(&a),
        "--log",
        arg(&log_a),
    ]));
    // The "killed" run stops after 17 updates; its last checkpoint is at 15.
    stdout(&kiln(&[
        "train",
        arg(&run),
        "--device",
        "cpu",
        "--quiet",
        "--steps",
        "17",
        "--checkpoint-dir",
        arg(&ck),
        "--checkpoint-every",
        "5",
        "--log",
        arg(&log_b),
    ]));
    // Killed a little after its checkpoint: lines about updates the checkpoint does not hold.
    let mut cut = std::fs::read_to_string(&log_b).unwrap();
    assert!(cut.contains(r#""end_of_run":true"#), "{name}: {cut}");
    cut += "{\"step\":17,\"epoch\":4,\"lr\":0.1,\"loss\":0.25}\n";
    std::fs::write(&log_b, cut).unwrap();
    let out = stdout(&kiln(&[
        "train",
        arg(&run),
        "--device",
        "cpu",
        "--resume",
        arg(&ck),
        "--save",
        arg(&b),
        "--log",
        arg(&log_b),
    ]));
    assert!(out.contains("resuming at 17"), "{name}: {out}");
    assert_same_file(&a, &b, &format!("{name}: resumed weights differ"));
    assert_eq!(
        std::fs::read_to_string(&log_b).unwrap(),
        std::fs::read_to_string(&log_a).unwrap(),
        "{name}: the resumed run's log"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// REGRESSION_RUN as one linear layer on every row: a feature of 1e30 overflows its loss.
fn linear_run() -> String {
    REGRESSION_RUN
        .replace("validation = 0.25", "validation = 0.0")
        .replace(
            r#"[{ dense = 8 }, "tanh", { dense = 1 }]"#,
            "[{ dense = 1 }]",
        )
}

#[test]
fn a_non_finite_loss_stops_the_run_or_is_skipped() {
    // A linear model on features of 1e30: every squared error overflows to inf.
    let csv = "x0,x1,y\n1e30,1e30,1\n-1e30,1e30,0\n1e30,-1e30,1\n";
    let run = linear_run();
    let dir = run_dir("nan", csv, &run);
    let e = stderr_of_failure(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
    ]));
    assert!(e.contains("the loss of update 0 (epoch 0) is inf"), "{e}");
    let (before, after) = (
        dir.join("before.safetensors"),
        dir.join("after.safetensors"),
    );
    // No updates: the initial weights, and no loss to report.
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--steps",
        "0",
        "--save",
        arg(&before),
    ]));
    assert!(
        out.contains("no updates made") && !out.contains("NaN"),
        "{out}"
    );
    // Skipping every update trains nothing: that is a failure, not a result.
    let e = stderr_of_failure(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--on-nan",
        "skip",
        "--save",
        arg(&after),
    ]));
    assert!(
        e.contains("every one of the 30 updates had a non-finite loss"),
        "{e}"
    );
    assert!(!after.exists() && before.exists());
    // One bad row in three, one row a batch: one update skipped, said and logged.
    std::fs::write(
        dir.join("data.csv"),
        "x0,x1,y
1,2,1
1e30,1e30,0
2,1,1
",
    )
    .unwrap();
    let log = dir.join("m.jsonl");
    let run = run
        .replace("batch_size = 8", "batch_size = 1")
        .replace("steps = 30", "steps = 3");
    std::fs::write(dir.join("run.toml"), run).unwrap();
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--on-nan",
        "skip",
        "--log",
        arg(&log),
    ]));
    assert!(out.contains("1 skipped for a non-finite loss"), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(r#""loss":null"#), "{text}");
    assert!(text.contains(r#""skipped_updates":1"#), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run resumed from a checkpoint at its end (killed after it, before anything else) makes no
/// update and logs nothing twice: its log is the uninterrupted run's, whose last update was
/// evaluated as it went.
#[test]
fn a_run_resumed_at_its_end_logs_nothing_twice() {
    let run = REGRESSION_RUN.replace("batch_size = 8", "batch_size = 8\neval_every = 10");
    let dir = run_dir("resume-at-end", &regression_csv(), &run);
    let (ck, run_file) = (dir.join("ck"), dir.join("run.toml"));
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let train = |extra: &[&str]| {
        let mut args = vec!["train", arg(&run_file), "--device", "cpu"];
        args.extend_from_slice(extra);
        stdout(&kiln(&args))
    };
    train(&["--log", arg(&a)]);
    train(&["--log", arg(&b), "--checkpoint-dir", arg(&ck)]);
    let out = train(&["--log", arg(&b), "--resume", arg(&ck)]);
    assert!(out.contains("validation"), "{out}");
    let whole = std::fs::read_to_string(&a).unwrap();
    assert!(whole.contains(r#"{"step":29,"#), "{whole}");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), whole);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--save-best` with nothing to judge by (no validation rows) says it saved nothing.
#[test]
fn save_best_without_evaluations_says_so() {
    let dir = run_dir("save-best-none", &regression_csv(), &linear_run());
    let best = dir.join("best.safetensors");
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--save-best",
        arg(&best),
    ]));
    assert!(out.contains("--save-best: nothing saved"), "{out}");
    assert!(!best.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// one_cycle's three phases, linear, end below zero one update past `total_steps`: a run of
/// exactly `total_steps` updates ends, saves and checkpoints (as PyTorch's loop does, which
/// never uses that rate); resuming it for more is refused, naming the rate.
#[test]
fn a_schedule_with_no_rate_past_the_last_update_still_ends() {
    let run = REGRESSION_RUN.replace(
        "kind = \"step\"\nstep_size = 10\ngamma = 0.5",
        "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 30\nthree_phase = true\nanneal_strategy = \"linear\"",
    );
    assert!(run.contains("one_cycle"));
    let dir = run_dir("one-cycle-end", &regression_csv(), &run);
    let (save, ck) = (dir.join("w.safetensors"), dir.join("ck"));
    stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--save",
        arg(&save),
        "--checkpoint-dir",
        arg(&ck),
    ]));
    assert!(save.exists());
    // Resumed at its end (a run killed after its last checkpoint), it ends there again.
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--resume",
        arg(&ck),
    ]));
    assert!(out.contains("no updates made"), "{out}");
    let e = stderr_of_failure(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--resume",
        arg(&ck),
        "--steps",
        "31",
    ]));
    assert!(e.contains("the rate for update 30 is -"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kiln schedule` lists the momentum a cycling schedule sets beside each rate (PyTorch's
/// OneCycleLR: max_momentum while the rate is lowest). A checkpoint from before Kiln cycled
/// momentum recorded its schedule without the momentum keys, as one with
/// `cycle_momentum = false` records it now: it resumes under `cycle_momentum = false`, as it
/// ran, and the refusal without it says so.
#[test]
fn cycled_momentum_is_listed_and_rates_only_checkpoints_resume_as_they_ran() {
    let one_cycle = "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 30";
    let f = scratch("cycled.toml", &format!("[schedule]\n{one_cycle}\n"));
    let out = stdout(&kiln(&["schedule", arg(&f), "--steps", "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "step,lr,momentum", "{out}");
    assert!(
        lines[1].starts_with("0,0.00400000") && lines[1].ends_with(",0.95"),
        "{out}"
    );
    let m: f64 = lines[2].split(',').nth(2).unwrap().parse().unwrap();
    assert!(0.85 < m && m < 0.95, "{out}");
    let json = stdout(&kiln(&[
        "schedule",
        arg(&f),
        "--steps",
        "2",
        "--format",
        "json",
    ]));
    assert!(json.contains("\"momentum\": [0.95, "), "{json}");
    let g = scratch(
        "rates-only.toml",
        &format!("[schedule]\n{one_cycle}\ncycle_momentum = false\n"),
    );
    let out = stdout(&kiln(&["schedule", arg(&g), "--steps", "2"]));
    assert!(out.starts_with("step,lr\n0,0.00400000"), "{out}");
    // A run file whose optimizer has no momentum fails as its training would.
    let h = scratch(
        "adagrad-cycled.toml",
        &format!("[optimizer]\nkind = \"adagrad\"\n[schedule]\n{one_cycle}\n"),
    );
    let e = stderr_of_failure(&kiln(&["schedule", arg(&h), "--steps", "2"]));
    assert!(
        e.contains("schedule.cycle_momentum") && e.contains("adagrad"),
        "{e}"
    );
    assert_eq!(out.lines().nth(1).unwrap().split(',').count(), 2, "{out}");
    // and so does a β1 the cycle takes to 1, at the update that would use it.
    let b = scratch(
        "adam-beta1.toml",
        &format!("[optimizer]\nkind = \"adam\"\n[schedule]\n{one_cycle}\nmax_momentum = 1\n"),
    );
    let e = stderr_of_failure(&kiln(&["schedule", arg(&b), "--steps", "2"]));
    assert!(
        e.contains("momentum for update 0 is 1.0") && e.contains("betas[0] must be in [0, 1)"),
        "{e}"
    );

    let rates_only = REGRESSION_RUN.replace(
        "kind = \"step\"\nstep_size = 10\ngamma = 0.5",
        &format!("{one_cycle}\ncycle_momentum = false"),
    );
    let dir = run_dir("rates-only", &regression_csv(), &rates_only);
    let (run, ck) = (dir.join("run.toml"), dir.join("ck"));
    let train = |extra: &[&str]| {
        let mut args = vec!["train", arg(&run), "--device", "cpu"];
        args.extend_from_slice(extra);
        kiln(&args)
    };
    stdout(&train(&["--steps", "10", "--checkpoint-dir", arg(&ck)]));
    std::fs::write(&run, rates_only.replace("\ncycle_momentum = false", "")).unwrap();
    // The cycled run logs each update's momentum beside its rate (SGD's momentum 0.9 is
    // max_momentum's 0.95 from the first update on).
    let log = dir.join("cycled.jsonl");
    stdout(&train(&["--steps", "3", "--log", arg(&log)]));
    let first = std::fs::read_to_string(&log).unwrap();
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"step":0,"#) && first.ends_with(r#","momentum":0.95}"#),
        "{first}"
    );
    // and `kiln plot` draws it as a panel of its own.
    let png = dir.join("cycled.png");
    stdout(&kiln(&["plot", arg(&log), "-o", arg(&png)]));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let e = stderr_of_failure(&train(&["--resume", arg(&ck)]));
    assert!(
        e.contains("add cycle_momentum = false to the schedule to resume it as it ran"),
        "{e}"
    );
    // total_steps and epochs·steps_per_epoch are one schedule: either resumes the other's
    // checkpoint (the run's 30 updates are 10 epochs of 3).
    std::fs::write(
        &run,
        rates_only.replace("total_steps = 30", "epochs = 10\nsteps_per_epoch = 3"),
    )
    .unwrap();
    let out = stdout(&train(&["--resume", arg(&ck), "--steps", "11"]));
    assert!(out.contains("resuming at 10"), "{out}");
    // Its checkpoint (at 11) resumes under total_steps again.
    std::fs::write(&run, &rates_only).unwrap();
    let out = stdout(&train(&["--resume", arg(&ck)]));
    assert!(out.contains("resuming at 11"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that skipped non-finite losses (`--on-nan skip`) checkpoints them and resumes: the
/// current epoch's losses and the observations a per-update schedule has yet to see keep
/// their infinities (serde_json alone writes them as null, which did not read back).
#[test]
fn a_run_that_skipped_bad_losses_resumes_from_its_checkpoint() {
    // Two rows of four overflow the squared error; batches of one row, four to an epoch:
    // three updates take at least one of each.
    let csv = "x0,x1,y\n1,2,1\n1e30,1e30,0\n2,1,1\n-1e30,1e30,0\n";
    let run = linear_run()
        .replace(
            "kind = \"step\"\nstep_size = 10\ngamma = 0.5",
            "kind = \"reduce_on_plateau\"",
        )
        .replace("batch_size = 8", "batch_size = 1")
        .replace("steps = 30", "steps = 6");
    assert!(run.contains("reduce_on_plateau"));
    let dir = run_dir("skip-resume", csv, &run);
    let (ck, run_file) = (dir.join("ck"), dir.join("run.toml"));
    let (split_log, whole_log) = (dir.join("split.jsonl"), dir.join("whole.jsonl"));
    let train = |steps: &str, resume: bool| {
        let mut a = vec![
            "train",
            arg(&run_file),
            "--device",
            "cpu",
            "--on-nan",
            "skip",
            "--steps",
            steps,
            "--log",
            arg(&split_log),
        ];
        a.extend(if resume {
            ["--resume", arg(&ck)]
        } else {
            ["--checkpoint-dir", arg(&ck)]
        });
        stdout(&kiln(&a))
    };
    let out = train("3", false);
    assert!(out.contains("skipped for a non-finite loss"), "{out}");
    let meta = {
        let bytes = std::fs::read(ck.join("checkpoint.safetensors")).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        header.metadata().as_ref().unwrap()["kiln.checkpoint"].clone()
    };
    assert!(meta.contains(r#""inf""#), "{meta}");
    let out = train("6", true);
    assert!(out.contains("3 updates"), "{out}");
    // Its log is the uninterrupted run's: every skip counted once, in one line at the end.
    stdout(&kiln(&[
        "train",
        arg(&run_file),
        "--device",
        "cpu",
        "--on-nan",
        "skip",
        "--steps",
        "6",
        "--log",
        arg(&whole_log),
    ]));
    let whole = std::fs::read_to_string(&whole_log).unwrap();
    assert!(whole.contains("skipped_updates"), "{whole}");
    assert_eq!(std::fs::read_to_string(&split_log).unwrap(), whole);
    // In order, the fourth row (bad) alone in a resumed part: every update of that part is
    // skipped, and it still ends as a run (the updates before it trained).
    std::fs::write(
        &run_file,
        run.replace("validation = 0.0", "validation = 0.0\nshuffle = false"),
    )
    .unwrap();
    std::fs::remove_dir_all(&ck).unwrap();
    train("3", false);
    let out = train("4", true);
    assert!(
        out.contains("1 updates") && out.contains("1 skipped"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that diverges is stopped at its first loss that is not finite, whatever trips over
/// it first (an evaluation of the ruined parameters, a schedule that follows the loss), with
/// the updates before it in the log; skipping such updates, the evaluation is what fails.
#[test]
fn a_diverging_run_is_stopped_at_its_first_bad_loss() {
    // lr 1e30: update 0's loss is finite, its step ruins the parameters, update 1's loss is
    // inf; an epoch is 4 batches, evaluated at its end.
    let run = REGRESSION_RUN.replace("lr = 0.1", "lr = 1e30");
    let plateau = run.replace(
        "kind = \"step\"\nstep_size = 10\ngamma = 0.5",
        "kind = \"reduce_on_plateau\"",
    );
    assert_ne!(plateau, run);
    for (name, run) in [("step", &run), ("plateau", &plateau)] {
        let dir = run_dir(&format!("diverge-{name}"), &regression_csv(), run);
        let log = dir.join("m.jsonl");
        let e = stderr_of_failure(&kiln(&[
            "train",
            arg(&dir.join("run.toml")),
            "--device",
            "cpu",
            "--log",
            arg(&log),
        ]));
        assert!(
            e.contains("the loss of update 1 (epoch 0) is inf"),
            "{name}: {e}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.starts_with(r#"{"step":0,"epoch":0,"lr":1e+30,"loss":0."#),
            "{name}: {text}"
        );
        if name == "step" {
            let e = stderr_of_failure(&kiln(&[
                "train",
                arg(&dir.join("run.toml")),
                "--device",
                "cpu",
                "--on-nan",
                "skip",
                "--log",
                arg(&log),
            ]));
            assert!(
                e.contains("the validation loss (first at ")
                    && e.contains("data.csv, line ")
                    && e.contains("training diverged"),
                "{e}"
            );
            // The epoch's updates are all in the log, the skipped ones without a loss, and
            // how many were skipped.
            let text = std::fs::read_to_string(&log).unwrap();
            assert_eq!(text.lines().count(), 5, "{text}");
            assert!(
                text.ends_with("{\"step\":3,\"epoch\":0,\"skipped_updates\":3}\n"),
                "{text}"
            );
            assert!(
                text.contains(r#""step":3,"epoch":0,"lr":1e+30,"loss":null"#),
                "{text}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_run_files_name_the_key() {
    let dir = run_dir(
        "bad",
        &regression_csv(),
        &REGRESSION_RUN.replace("batch_size = 8", "batch_size = 8\nbatchsize = 9"),
    );
    let e = stderr_of_failure(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
    ]));
    assert!(
        e.contains("run.toml") && e.contains("unknown field `batchsize`"),
        "{e}"
    );
    std::fs::write(
        dir.join("run.toml"),
        REGRESSION_RUN.replace("data.csv", "missing.csv"),
    )
    .unwrap();
    let e = stderr_of_failure(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
    ]));
    assert!(e.contains("missing.csv"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_prints_json_rows_for_the_cpu_device() {
    let out = stdout(&kiln(&[
        "bench",
        "--device",
        "cpu",
        "--quick",
        "--json",
        "--ops",
        "copy,optimizers,matmul",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|r| r["op"] == "copy").count(), 1);
    assert_eq!(
        rows.iter().filter(|r| r["op"] == "matmul").count(),
        5,
        "2 square + 3 layer products"
    );
    for r in rows {
        assert_eq!(r["device"], "cpu");
        assert!(r["median_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["gflops"].as_f64().is_some() || r["gbps"].as_f64().is_some(),
            "{r}"
        );
    }
    for name in [
        "sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam",
    ] {
        let row = rows.iter().find(|r| r["op"] == name).unwrap();
        assert!(
            row["pct_peak"].as_f64().unwrap() > 0.0,
            "{name} is held to the measured copy bandwidth"
        );
    }
    let e = stderr_of_failure(&kiln(&["bench", "--device", "cpu", "--ops", "fft"]));
    assert!(e.contains("unknown op \"fft\""), "{e}");
}

/// A per-epoch plateau on validation accuracy with Keras-style early stopping: the log has an
/// evaluation per epoch and the early stop with its reason, `--save-best` keeps the best
/// check's weights, and with `restore_best` the saved final weights are those same weights.
#[test]
fn early_stopping_logs_its_reason_and_keeps_the_best_weights() {
    let run = r#"
[model]
layers = [{ dense = 16 }, "relu", { dense = 10 }]
loss = "cross_entropy"
[data]
source = "digits"
validation = 0.2
normalize = "standard"
[optimizer]
lr = 0.05
momentum = 0.9
[schedule]
interval = "epoch"
kind = "reduce_on_plateau"
monitor = "val_accuracy"
mode = "max"
patience = 0
[train]
epochs = 6
batch_size = 128
early_stopping = { monitor = "val_loss", min_delta = 100.0, patience = 1, restore_best = true }
"#;
    let dir = run_dir("early", "x,y\n0,0\n", run);
    let (log, best, last) = (
        dir.join("m.jsonl"),
        dir.join("best.safetensors"),
        dir.join("last.safetensors"),
    );
    let out = stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--log",
        arg(&log),
        "--save-best",
        arg(&best),
        "--save",
        arg(&last),
    ]));
    // Updates numbered from 0, as the log's steps.
    assert!(out.contains("early stop after update 23"), "{out}");
    assert!(
        out.contains("restored the weights of the best check (after update 11)"),
        "{out}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals = lines.iter().filter(|l| l.get("val_loss").is_some()).count();
    let stops: Vec<_> = lines
        .iter()
        .filter(|l| l.get("early_stop").is_some())
        .collect();
    // 12 updates an epoch (1437 rows in batches of 128); two epochs, and the final evaluation
    // of the restored weights.
    assert_eq!(lines.iter().filter(|l| l.get("lr").is_some()).count(), 24);
    assert_eq!(evals, 3);
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0]["step"], 23);
    let reason = stops[0]["early_stop"].as_str().unwrap();
    assert!(
        reason.starts_with("val_loss did not improve for 1 checks")
            && reason.ends_with("after update 11)"),
        "{reason}"
    );
    assert_same_file(&best, &last, "restored weights differ from the best kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kiln schedule` with interval = "epoch": one rate per epoch, or each update's rate with
/// --batches-per-epoch (a composite's children counting epochs too).
#[test]
fn schedule_lists_epoch_rates_or_each_updates_rate() {
    let f = scratch(
        "epochs.toml",
        "[schedule]\nlr = 1.0\ninterval = \"epoch\"\nkind = \"warmup\"\nsteps = 1\nstart_factor = 0.5\nthen = { kind = \"step\", step_size = 1, gamma = 0.5 }\n",
    );
    let out = stdout(&kiln(&["schedule", arg(&f), "--steps", "3"]));
    assert_eq!(out, "epoch,lr\n0,0.5\n1,1.0\n2,0.5\n");
    let out = stdout(&kiln(&[
        "schedule",
        arg(&f),
        "--steps",
        "3",
        "--batches-per-epoch",
        "2",
    ]));
    assert_eq!(out, "step,lr\n0,0.5\n1,0.5\n2,1.0\n3,1.0\n4,0.5\n5,0.5\n");
    let g = scratch("updates.toml", "[schedule]\nlr = 1.0\nkind = \"fixed\"\n");
    let e = stderr_of_failure(&kiln(&[
        "schedule",
        arg(&g),
        "--steps",
        "3",
        "--batches-per-epoch",
        "2",
    ]));
    assert!(
        e.contains("--batches-per-epoch is for a schedule with interval = \"epoch\""),
        "{e}"
    );
}

/// The README's run-file reference trains as written (a few updates of it).
#[test]
fn the_readme_run_file_reference_trains() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Run files").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let toml = &section[start..start + section[start..].find("```").unwrap()];
    let dir = run_dir("readme", "", toml);
    stdout(&kiln(&[
        "train",
        arg(&dir.join("run.toml")),
        "--device",
        "cpu",
        "--steps",
        "5",
        "--quiet",
    ]));
    std::fs::remove_dir_all(&dir).unwrap();
}
