//! Every schedule kind saves and restores mid-run: k updates, save, restore, continue ≡ the
//! uninterrupted run, bit for bit, its rates and the momentum it cycles.

use kiln_schedule::{Observation, ScheduleConfig, Scheduler};

/// A loss and gradient norm for every update, wandering so that plateau, bold-driver and
/// milestone logic all fire.
fn observation(t: usize) -> Observation {
    let t = t as f64;
    Observation {
        loss: Some(1.0 / (1.0 + 0.1 * t) * (1.0 + 0.3 * (0.7 * t).sin())),
        grad_norm_sq: Some(0.5 + (1.3 * t).cos().abs()),
    }
}

fn build(toml: &str) -> Scheduler {
    ScheduleConfig::from_toml(toml)
        .and_then(|c| c.build(Some(0.1)))
        .unwrap_or_else(|e| panic!("{toml}: {e}"))
}

fn check_resume(toml: &str) {
    const TOTAL: usize = 60;
    let mut reference = build(toml);
    let mut want = Vec::new();
    for t in 0..TOTAL {
        want.push((
            reference.lr().to_bits(),
            reference.momentum().map(f64::to_bits),
        ));
        reference.step(&observation(t)).unwrap();
    }
    for k in [0, 1, 2, 5, 13, 31] {
        let mut first = build(toml);
        for t in 0..k {
            first.step(&observation(t)).unwrap();
        }
        let saved = serde_json::to_string(&first).unwrap();
        drop(first);
        let mut resumed: Scheduler =
            serde_json::from_str(&saved).unwrap_or_else(|e| panic!("{toml}: {e}\n{saved}"));
        // What a checkpoint's load checks: every state a run reaches passes.
        resumed
            .check()
            .unwrap_or_else(|e| panic!("{toml}: resumed after {k}: {e}"));
        for (t, w) in want.iter().enumerate().skip(k) {
            assert_eq!(
                (resumed.lr().to_bits(), resumed.momentum().map(f64::to_bits)),
                *w,
                "{toml}\nresumed after {k}: update {t}"
            );
            resumed.step(&observation(t)).unwrap();
        }
    }
}

macro_rules! resumes {
    ($($name:ident: $toml:expr,)*) => {
        $( #[test] fn $name() { check_resume($toml) } )*
    };
}

resumes! {
    fixed: "kind = \"fixed\"",
    constant: "kind = \"constant\"",
    linear: "kind = \"linear\"\ntotal_iters = 10",
    step: "kind = \"step\"\nstep_size = 4\ngamma = 0.5",
    multi_step: "kind = \"multi_step\"\nmilestones = [3, 9, 9, 20]",
    exponential: "kind = \"exponential\"\ngamma = 0.97",
    polynomial: "kind = \"polynomial\"\ntotal_iters = 40\npower = 2",
    cosine_annealing: "kind = \"cosine_annealing\"\nt_max = 17\neta_min = 0.001",
    cosine_annealing_warm_restarts: "kind = \"cosine_annealing_warm_restarts\"\nt_0 = 4\nt_mult = 2",
    cyclic: "kind = \"cyclic\"\nbase_lr = 0.01\nmax_lr = 0.1\nstep_size_up = 5\nmode = \"triangular2\"",
    one_cycle: "kind = \"one_cycle\"\nmax_lr = 0.5\ntotal_steps = 100\nthree_phase = true",
    nested_sequential: "kind = \"sequential\"\nmilestones = [2]\nschedules = [{ kind = \"sequential\", milestones = [1], schedules = [{ kind = \"sequential\", milestones = [1], schedules = [{ kind = \"linear\" }, { kind = \"fixed\" }] }, { kind = \"fixed\" }] }, { kind = \"one_cycle\", max_lr = 0.2, total_steps = 100 }]",
    one_cycle_then_cyclic: "kind = \"sequential\"\nmilestones = [20]\nschedules = [{ kind = \"one_cycle\", max_lr = 0.5, total_steps = 20 }, { kind = \"cyclic\", base_lr = 0.01, max_lr = 0.1, step_size_up = 5, base_momentum = 0.5 }]",
    multiplicative: "kind = \"multiplicative\"\nfactor = 0.95",
    sequential: "kind = \"sequential\"\nmilestones = [5, 20]\nschedules = [{ kind = \"linear\", start_factor = 0.1, total_iters = 5 }, { kind = \"cosine_annealing_warm_restarts\", t_0 = 6 }, { kind = \"exponential\", gamma = 0.9 }]",
    chained: "kind = \"chained\"\nschedules = [{ kind = \"step\", step_size = 7 }, { kind = \"cosine_annealing\", t_max = 25 }, { kind = \"bold_driver\" }]",
    reduce_on_plateau: "kind = \"reduce_on_plateau\"\npatience = 2\ncooldown = 1\nfactor = 0.5",
    inverse_time: "kind = \"inverse_time\"\ngamma = 0.3",
    inverse_sqrt: "kind = \"inverse_sqrt\"\ngamma = 0.3",
    exponential_decay: "kind = \"exponential_decay\"\ndecay_rate = 0.5\ndecay_steps = 7\nstaircase = true",
    piecewise_constant: "kind = \"piecewise_constant\"\nboundaries = [10, 30]\nvalues = [0.1, 0.03, 0.001]",
    linear_decay: "kind = \"linear_decay\"\nalpha = 0.02\nend_lr = 0.01",
    warmup: "kind = \"warmup\"\nsteps = 8\nstart_factor = 0.01\nthen = { kind = \"inverse_sqrt\", gamma = 0.5 }",
    loss_milestones: "kind = \"loss_milestones\"\nthresholds = [0.9, 0.5, 0.2]",
    bold_driver: "kind = \"bold_driver\"\nmin_lr = 0.001\nmax_lr = 0.2",
    bold_driver_unbounded: "kind = \"bold_driver\"",
    grad_norm_adaptive: "kind = \"grad_norm_adaptive\"\nbeta = 0.1",
    loss_adaptive: "kind = \"loss_adaptive\"\nbeta = 3",
}

/// A checkpoint's scheduler is held to itself: the momentum it saved must match whether its
/// schedule cycles one (a trainer sizes its momentum buffers by it). A scheduler saved before
/// Kiln cycled momentum (no momentum anywhere) restores as the rates-only run it was.
#[test]
fn saved_momentum_must_match_the_schedule() {
    let mut s = build("kind = \"one_cycle\"\nmax_lr = 0.5\ntotal_steps = 100");
    s.step(&Observation::default()).unwrap();
    let saved = serde_json::to_value(&s).unwrap();
    let restored: Scheduler = serde_json::from_value(saved.clone()).unwrap();
    restored.check().unwrap();

    let mut lost = saved.clone();
    lost["group"]["momentum"] = serde_json::Value::Null;
    let restored: Scheduler = serde_json::from_value(lost).unwrap();
    let e = restored.check().unwrap_err().to_string();
    assert!(
        e.contains("schedule.momentum") && e.contains("damaged"),
        "{e}"
    );

    // Before momentum cycling: no momentum in the group or the schedule, nor the group keys.
    let mut old = saved;
    let group = old["group"].as_object_mut().unwrap();
    for key in [
        "momentum",
        "max_lr",
        "min_lr",
        "max_momentum",
        "base_momentum",
    ] {
        group.remove(key);
    }
    old["schedule"]["rule"]
        .as_object_mut()
        .unwrap()
        .remove("momentum")
        .unwrap();
    let mut restored: Scheduler = serde_json::from_value(old).unwrap();
    restored.check().unwrap();
    assert_eq!(restored.momentum(), None);
    let mut reference = build("kind = \"one_cycle\"\nmax_lr = 0.5\ntotal_steps = 100");
    reference.step(&Observation::default()).unwrap();
    for _ in 0..10 {
        assert_eq!(restored.lr().to_bits(), reference.lr().to_bits());
        restored.step(&Observation::default()).unwrap();
        reference.step(&Observation::default()).unwrap();
    }
}

/// A `sequential` of two one_cycles saved before the group kept OneCycleLR's bounds (no
/// `max_lr`, `min_lr` in the group) resumes on the first one's own bounds, as it ran then (its
/// `initial_lr` in the group was the second one's).
#[test]
fn one_cycles_saved_before_the_group_kept_their_bounds_run_on_their_own() {
    let toml = "kind = \"sequential\"\nmilestones = [20]\nschedules = [{ kind = \"one_cycle\", max_lr = 0.1, total_steps = 20, cycle_momentum = false }, { kind = \"one_cycle\", max_lr = 0.5, total_steps = 10, cycle_momentum = false }]";
    let own = "kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 20\ncycle_momentum = false";
    let (mut s, mut alone) = (build(toml), build(own));
    s.step(&Observation::default()).unwrap();
    alone.step(&Observation::default()).unwrap();
    let mut old = serde_json::to_value(&s).unwrap();
    let group = old["group"].as_object_mut().unwrap();
    group.remove("max_lr");
    group.remove("min_lr");
    let mut resumed: Scheduler = serde_json::from_value(old).unwrap();
    resumed.check().unwrap();
    // The rate of update 1 was computed before the save; the next ones after it, from the
    // warm-up (which reads initial_lr) to the end.
    for t in 2..20 {
        resumed.step(&Observation::default()).unwrap();
        alone.step(&Observation::default()).unwrap();
        assert_eq!(resumed.lr().to_bits(), alone.lr().to_bits(), "update {t}");
    }
}
