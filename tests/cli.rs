//! The `kiln` binary as a user runs it: `kiln schedule` output, plots and errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("NODEVICE_SELECT", "1")
        .output()
        .expect("kiln runs")
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
