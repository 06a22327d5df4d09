//! The schedules PyTorch lacks, against their formulas; composition; closures and user types.

use kiln_schedule::{Group, LrSchedule, Observation, Schedule, ScheduleConfig, Scheduler};

fn build(toml: &str, lr: Option<f64>) -> Scheduler {
    ScheduleConfig::from_toml(toml)
        .and_then(|c| c.build(lr))
        .unwrap_or_else(|e| panic!("{toml}: {e}"))
}

/// Rates with one observation per update (`obs[t]` is seen after update t).
fn rates_with(s: &mut Scheduler, obs: &[Observation]) -> Vec<f64> {
    let mut out = vec![s.lr()];
    for o in obs {
        s.step(o).unwrap();
        out.push(s.lr());
    }
    out
}

fn losses(values: &[f64]) -> Vec<Observation> {
    values.iter().map(|&v| Observation::value(v)).collect()
}

#[test]
fn inverse_time_is_lr_over_1_plus_gamma_t() {
    let got = build("kind = \"inverse_time\"\ngamma = 0.5", Some(0.1))
        .rates(50)
        .unwrap();
    for (t, g) in got.iter().enumerate() {
        assert_eq!(*g, 0.1 / (1.0 + 0.5 * t as f64), "t={t}");
    }
}

#[test]
fn inverse_sqrt_is_lr_over_sqrt_1_plus_gamma_t() {
    let got = build("kind = \"inverse_sqrt\"\ngamma = 2", Some(0.3))
        .rates(50)
        .unwrap();
    for (t, g) in got.iter().enumerate() {
        assert_eq!(*g, 0.3 / (1.0 + 2.0 * t as f64).sqrt(), "t={t}");
    }
}

#[test]
fn exponential_decay_smooth_and_staircase() {
    let mut smooth = build(
        "kind = \"exponential_decay\"\ndecay_rate = 0.5\ndecay_steps = 4",
        Some(1.0),
    );
    let mut stairs = build(
        "kind = \"exponential_decay\"\ndecay_rate = 0.5\ndecay_steps = 4\nstaircase = true",
        Some(1.0),
    );
    for (t, (a, b)) in smooth
        .rates(20)
        .unwrap()
        .iter()
        .zip(stairs.rates(20).unwrap())
        .enumerate()
    {
        assert_eq!(*a, 0.5f64.powf(t as f64 / 4.0), "t={t}");
        assert_eq!(b, 0.5f64.powf((t / 4) as f64), "t={t}");
    }
}

#[test]
fn piecewise_constant_follows_keras_boundaries_and_ignores_lr() {
    let mut s = build(
        "kind = \"piecewise_constant\"\nboundaries = [3, 6]\nvalues = [0.1, 0.05, 0.01]",
        None,
    );
    let want = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.01, 0.01];
    assert_eq!(s.rates(9).unwrap(), want);
}

#[test]
fn linear_decay_stops_at_end_lr() {
    let got = build(
        "kind = \"linear_decay\"\nalpha = 0.1\nend_lr = 0.02",
        Some(0.1),
    )
    .rates(15)
    .unwrap();
    for (t, g) in got.iter().enumerate() {
        assert_eq!(*g, (0.1 * (1.0 - 0.1 * t as f64)).max(0.02), "t={t}");
    }
    // A floor above the base rate would be no decay at all.
    let e = ScheduleConfig::from_toml("kind = \"linear_decay\"\nalpha = 0.1\nend_lr = 5")
        .unwrap()
        .build(Some(0.1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("schedule.end_lr: 5 is above the base rate 0.1"),
        "{e}"
    );
}

#[test]
fn loss_milestones_halve_once_per_threshold() {
    let mut s = build(
        "kind = \"loss_milestones\"\nthresholds = [0.5, 0.2]",
        Some(0.1),
    );
    // Below 0.5 after update 1 (halved), back above (kept), below 0.2 after update 4.
    let got = rates_with(&mut s, &losses(&[0.9, 0.4, 0.6, 0.45, 0.1, 0.05]));
    assert_eq!(got, [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]);
    // Both thresholds at once: halved twice.
    let mut s = build(
        "kind = \"loss_milestones\"\nthresholds = [0.5, 0.2]",
        Some(0.1),
    );
    assert_eq!(rates_with(&mut s, &losses(&[0.9, 0.1])), [0.1, 0.1, 0.025]);
}

#[test]
fn bold_driver_grows_on_falls_and_cuts_on_rises() {
    let mut s = build(
        "kind = \"bold_driver\"\ndecrease = 0.5\nincrease = 1.25\nmin_lr = 0.01\nmax_lr = 0.15",
        Some(0.1),
    );
    let got = rates_with(&mut s, &losses(&[1.0, 0.8, 0.7, 0.9, 0.9, 2.0, 3.0, 4.0]));
    // First loss: nothing to compare. Falls: ×1.25 (capped at 0.15). Rise: ×0.5. Equal: kept.
    let want = [0.1, 0.1, 0.125, 0.15, 0.075, 0.075, 0.0375, 0.01875, 0.01];
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-15, "t={t}: {g} vs {w}");
    }
}

#[test]
fn grad_norm_adaptive_is_adagrad_norm() {
    let mut s = build("kind = \"grad_norm_adaptive\"\nbeta = 0.5", Some(0.2));
    let g2 = [4.0, 1.0, 9.0, 0.25];
    let obs: Vec<_> = g2
        .iter()
        .map(|&v| Observation {
            loss: None,
            grad_norm_sq: Some(v),
        })
        .collect();
    let got = rates_with(&mut s, &obs);
    let mut sum = 0.0;
    let mut want = vec![0.2];
    for v in g2 {
        sum += v;
        want.push(0.2 / (1.0 + 0.5 * sum).sqrt());
    }
    assert_eq!(got, want);
}

#[test]
fn loss_adaptive_divides_by_1_plus_beta_loss() {
    let mut s = build("kind = \"loss_adaptive\"\nbeta = 2", Some(0.1));
    let got = rates_with(&mut s, &losses(&[1.5, 0.5, 0.0]));
    assert_eq!(got, [0.1, 0.1 / 4.0, 0.1 / 2.0, 0.1]);
}

#[test]
fn chained_is_the_product_of_its_schedules() {
    let mut s = build(
        r#"kind = "chained"
schedules = [{ kind = "exponential", gamma = 0.9 }, { kind = "inverse_time", gamma = 0.5 }, { kind = "step", step_size = 4, gamma = 0.5 }]"#,
        Some(0.1),
    );
    for (t, g) in s.rates(30).unwrap().iter().enumerate() {
        let want =
            0.1 * 0.9f64.powi(t as i32) / (1.0 + 0.5 * t as f64) * 0.5f64.powi((t / 4) as i32);
        assert!((g - want).abs() <= 1e-14 * want, "t={t}: {g} vs {want}");
    }
}

#[test]
fn observation_driven_schedules_chain_with_others() {
    // Cosine annealing times loss-threshold halving.
    let mut s = build(
        r#"kind = "chained"
schedules = [{ kind = "cosine_annealing", t_max = 10 }, { kind = "loss_milestones", thresholds = [0.5] }]"#,
        Some(0.1),
    );
    let got = rates_with(&mut s, &losses(&[0.9, 0.9, 0.3, 0.3, 0.3]));
    for (t, g) in got.iter().enumerate() {
        let cosine = 0.1 * (1.0 + (std::f64::consts::PI * t as f64 / 10.0).cos()) / 2.0;
        let want = if t >= 3 { cosine * 0.5 } else { cosine };
        assert!((g - want).abs() <= 1e-15, "t={t}: {g} vs {want}");
    }
}

#[test]
fn a_closure_schedule_is_lambda_lr() {
    let mut s = Scheduler::new(0.5, Schedule::lambda(|t| 1.0 / (t + 1) as f64)).unwrap();
    assert_eq!(s.rates(4).unwrap(), [0.5, 0.25, 0.5 / 3.0, 0.125]);
    assert!(
        serde_json::to_string(&s).is_err(),
        "a closure's state cannot be saved"
    );
}

/// A user type: halve the rate every other update.
#[derive(Debug)]
struct HalveEveryOther {
    t: u64,
}

impl LrSchedule for HalveEveryOther {
    fn construct(&mut self, _group: &mut Group) -> kiln_schedule::Result<()> {
        Ok(())
    }
    fn step(&mut self, group: &mut Group, _o: &Observation) -> kiln_schedule::Result<()> {
        self.t += 1;
        if self.t.is_multiple_of(2) {
            group.lr *= 0.5;
        }
        Ok(())
    }
}

#[test]
fn a_user_type_is_a_schedule() {
    let mut s = Scheduler::new(1.0, Schedule::custom(HalveEveryOther { t: 0 })).unwrap();
    assert_eq!(s.rates(6).unwrap(), [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]);
}

/// A schedule built by hand, without its constructor, is checked as the constructor would:
/// an error, not a division by zero or an index out of range at some later step.
#[test]
fn hand_built_schedules_are_checked() {
    use kiln_schedule::epochal::Epochal;
    use kiln_schedule::exponential_decay::ExponentialDecay;
    use kiln_schedule::factor::Factored;
    use kiln_schedule::step::StepLr;
    let e = Scheduler::new(
        0.1,
        Schedule::Step(Epochal::new(StepLr {
            step_size: 0,
            gamma: 0.5,
        })),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("step_size"), "{e}");
    let e = Scheduler::new(
        0.1,
        Schedule::ExponentialDecay(Factored::new(ExponentialDecay {
            decay_rate: 0.5,
            decay_steps: 0,
            staircase: true,
        })),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("decay_steps"), "{e}");
}

#[test]
fn observation_driven_schedules_demand_their_observation() {
    let mut s = build("kind = \"loss_adaptive\"\nbeta = 1", Some(0.1));
    let e = s.step(&Observation::default()).unwrap_err().to_string();
    assert!(e.contains("needs the loss"), "{e}");
    let mut s = build("kind = \"grad_norm_adaptive\"\nbeta = 1", Some(0.1));
    let e = s
        .step(&Observation::value(f64::NAN))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is NaN"), "{e}");
    let e = s.step(&Observation::value(-4.0)).unwrap_err().to_string();
    assert!(e.contains("grad_norm_sq after update 0 is -4"), "{e}");
    // A loss (or a metric) may be negative.
    let mut s = build("kind = \"reduce_on_plateau\"", Some(0.1));
    s.step(&Observation::value(-4.0)).unwrap();
}
