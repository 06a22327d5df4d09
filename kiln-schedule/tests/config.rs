//! Config errors name the field and say why; PyTorch's defaults apply; integers pass for floats.

use kiln_schedule::{Kind, ScheduleConfig};

fn error(toml: &str) -> String {
    match ScheduleConfig::from_toml(toml).and_then(|c| c.build(Some(0.1))) {
        Ok(_) => panic!("expected an error for\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (
            "kind = \"cosine_annealing\"\nt_max = 0",
            "schedule.t_max: must be at least 1",
        ),
        (
            "kind = \"step\"\nstep_size = 2\ngamma = 0",
            "schedule.gamma: must be finite and > 0, got 0",
        ),
        ("kind = \"exponential\"\ngamma = -0.5", "schedule.gamma"),
        (
            "kind = \"constant\"\nfactor = 1.5",
            "schedule.factor: must be in [0, 1], got 1.5",
        ),
        (
            "kind = \"linear\"\nstart_factor = 0",
            "schedule.start_factor",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 10\npct_start = 1.5",
            "schedule.pct_start",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\nepochs = 3",
            "schedule.total_steps: missing: give total_steps, or epochs and steps_per_epoch",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\nepochs = 3\nsteps_per_epoch = 0",
            "schedule.steps_per_epoch: must be at least 1",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\nepochs = 4294967296\nsteps_per_epoch = 4294967296",
            "schedule.epochs",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 10\nbase_momentum = -0.1",
            "schedule.base_momentum: must be finite and >= 0",
        ),
        // Checked even where they are not used (PyTorch ignores them then).
        (
            "kind = \"cyclic\"\nbase_lr = 0.1\nmax_lr = 1\ncycle_momentum = false\nmax_momentum = nan",
            "schedule.max_momentum: must be finite and >= 0",
        ),
        (
            "kind = \"one_cycle\"\nmax_lr = 0.1\nepochs = 4294967296\nsteps_per_epoch = 4294967295",
            "schedule.epochs: 4294967296 epochs of 4294967295 steps",
        ),
        (
            "kind = \"reduce_on_plateau\"\nfactor = 1.0",
            "schedule.factor: must be in [0, 1), got 1",
        ),
        (
            "kind = \"piecewise_constant\"\nboundaries = [5, 3]\nvalues = [1, 2, 3]",
            "schedule.boundaries: must be increasing: 5 then 3",
        ),
        (
            "kind = \"piecewise_constant\"\nboundaries = [5]\nvalues = [1]",
            "schedule.values",
        ),
        (
            "kind = \"warmup\"\nsteps = 0\nthen = { kind = \"fixed\" }",
            "schedule.steps",
        ),
        (
            "kind = \"bold_driver\"\nmin_lr = 0.5\nmax_lr = 0.1",
            "schedule.max_lr",
        ),
    ];
    for (toml, want) in cases {
        let e = error(toml);
        assert!(e.contains(want), "{toml}\n→ {e}\nwanted {want}");
    }
}

#[test]
fn sequential_milestones_are_checked() {
    let two = "schedules = [{ kind = \"fixed\" }, { kind = \"exponential\", gamma = 0.9 }, { kind = \"fixed\" }]";
    let e = error(&format!(
        "kind = \"sequential\"\nmilestones = [5, 5]\n{two}"
    ));
    assert!(
        e.contains("schedule.milestones: must be increasing: 5 then 5"),
        "{e}"
    );
    let e = error(&format!("kind = \"sequential\"\nmilestones = [5]\n{two}"));
    assert!(e.contains("1 milestones for 3 schedules"), "{e}");
    let e = error(
        "kind = \"sequential\"\nmilestones = [2]\nschedules = [{ kind = \"fixed\" }, { kind = \"cosine_annealing\", t_max = 0 }]",
    );
    assert!(e.contains("schedule.schedules[1].t_max"), "{e}");
    let e = error("kind = \"chained\"\nschedules = [{ kind = \"reduce_on_plateau\" }]");
    assert!(
        e.contains("schedules[0]") && e.contains("cannot be chained"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_kinds_are_errors() {
    let e = error("kind = \"cosine_annealing\"\nt_max = 10\ntmax = 3");
    assert!(e.contains("tmax"), "{e}");
    let e = error("kind = \"cosine\"");
    assert!(
        e.contains("cosine") && e.contains("cosine_annealing"),
        "{e}"
    );
    let e = error("t_max = 10");
    assert!(e.contains("schedule.kind: missing"), "{e}");
    let e = error("kind = \"step\"");
    assert!(e.contains("step_size"), "{e}");
    let e = error("kind = \"fixed\"\nlr = \"fast\"");
    assert!(e.contains("schedule.lr: must be a number"), "{e}");
}

/// Every error names the key as the table spells it: a missing one at its own place in a
/// composite, warmup's own keys (not the LinearLR and SequentialLR it is made of).
#[test]
fn errors_name_the_key_as_written() {
    for (toml, key) in [
        ("kind = \"step\"", "schedule.step_size: missing field"),
        (
            "kind = \"warmup\"\nsteps = 3\nthen = { kind = \"step\" }",
            "schedule.then.step_size: missing field",
        ),
        (
            "kind = \"sequential\"\nmilestones = [2]\nschedules = [{ kind = \"step\" }, { kind = \"fixed\" }]",
            "schedule.schedules[0].step_size: missing field",
        ),
        (
            "kind = \"warmup\"\nsteps = 3\nthen = { kind = \"sequential\", milestones = [2], schedules = [{ kind = \"fixed\" }, { kind = \"exponential\" }] }",
            "schedule.then.schedules[1].gamma: missing field",
        ),
        (
            "kind = \"warmup\"\nsteps = 3\nstart_factor = 1.5\nthen = { kind = \"fixed\" }",
            "schedule.start_factor: must be in (0, 1]",
        ),
        (
            "kind = \"warmup\"\nsteps = 3\nthen = { kind = \"reduce_on_plateau\" }",
            "schedule.then: reduce_on_plateau cannot be part of a sequential",
        ),
        // A table where a number belongs is named as the key, not as a schedule inside it.
        (
            "kind = \"one_cycle\"\nmax_lr = 1\ntotal_steps = 9\nbase_momentum = { a = 1 }",
            "schedule.base_momentum: invalid type: map",
        ),
        (
            "kind = \"warmup\"\nsteps = 3\nthen = { t_max = 3 }",
            "schedule.then.kind: missing field",
        ),
    ] {
        let e = error(toml);
        assert!(e.contains(key), "{toml}: {e}");
    }
    // PyTorch takes a factor of 0 and divides by it when the constant phase ends.
    let mut s = ScheduleConfig::from_toml("kind = \"constant\"\nfactor = 0\ntotal_iters = 3")
        .unwrap()
        .build(Some(0.1))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(s.lr(), 0.0);
        s.step(&Default::default()).unwrap();
    }
    assert_eq!(s.lr(), 0.0);
    let e = s.step(&Default::default()).unwrap_err().to_string();
    assert!(e.contains("schedule.factor: is 0"), "{e}");
}

#[test]
fn lr_is_required_unless_the_schedule_sets_its_own() {
    let c = ScheduleConfig::from_toml("kind = \"exponential\"\ngamma = 0.9").unwrap();
    let e = c.build(None).unwrap_err().to_string();
    assert!(e.contains("schedule.lr: missing"), "{e}");
    assert_eq!(c.build(Some(0.2)).unwrap().lr(), 0.2);
    let c =
        ScheduleConfig::from_toml("kind = \"one_cycle\"\nmax_lr = 1\ntotal_steps = 10").unwrap();
    // max_lr/div_factor, through PyTorch's cosine anneal at pct = 0 (which rounds).
    assert!((c.build(None).unwrap().lr() - 1.0 / 25.0).abs() < 1e-16);
}

#[test]
fn pytorch_defaults_apply_and_integers_pass_for_floats() {
    let c = ScheduleConfig::from_toml("kind = \"reduce_on_plateau\"\nfactor = 0").unwrap();
    assert!(matches!(
        c.kind,
        Kind::ReduceOnPlateau {
            factor: 0.0,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            eps: 1e-8,
            ..
        }
    ));
    let c = ScheduleConfig::from_toml("kind = \"constant\"\nlr = 1").unwrap();
    assert_eq!(c.lr, Some(1.0));
    assert!(matches!(c.kind, Kind::Constant { total_iters: 5, .. }));
    let c =
        ScheduleConfig::from_toml("kind = \"one_cycle\"\nmax_lr = 1\ntotal_steps = 100").unwrap();
    assert!(matches!(
        c.kind,
        Kind::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            ..
        }
    ));
    assert_eq!(c.kind.name(), "one_cycle");
}
