//! Every PyTorch schedule, and the composites, against the rates PyTorch 2.15 gives for the same
//! configuration (tests/fixtures/pytorch.json, made by scripts/pytorch_fixtures.py).

use kiln_schedule::{Observation, ScheduleConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    torch: String,
    one_cycle_5_raises_at_update: u64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    toml: String,
    lr: f64,
    steps: usize,
    metrics: Option<Vec<f64>>,
    rates: Vec<f64>,
}

fn fixtures() -> Fixtures {
    let text = include_str!("fixtures/pytorch.json");
    serde_json::from_str(text).expect("fixtures parse")
}

/// Kiln's rates for a case, stepping with the case's metrics as observations.
fn kiln_rates(case: &Case) -> Vec<f64> {
    let config =
        ScheduleConfig::from_toml(&case.toml).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut s = config
        .build(Some(case.lr))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut rates = Vec::new();
    for t in 0..case.steps {
        rates.push(s.lr());
        if t + 1 < case.steps {
            let obs = match &case.metrics {
                Some(m) => Observation::value(m[t]),
                None => Observation::default(),
            };
            s.step(&obs)
                .unwrap_or_else(|e| panic!("{} step {t}: {e}", case.name));
        }
    }
    rates
}

#[test]
fn every_case_matches_pytorch_to_1e_12_relative() {
    let f = fixtures();
    assert!(f.torch.starts_with("2."), "fixtures from torch {}", f.torch);
    let mut exact = 0;
    let mut total = 0;
    for case in &f.cases {
        let got = kiln_rates(case);
        for (t, (g, w)) in got.iter().zip(&case.rates).enumerate() {
            let tol = 1e-12 * w.abs();
            assert!(
                (g - w).abs() <= tol,
                "{}: update {t}: Kiln {g:e}, PyTorch {w:e}\n{}",
                case.name,
                case.toml
            );
            exact += (g == w) as usize;
            if g != w && std::env::var_os("SHOW").is_some() {
                eprintln!("{} t={t} kiln={g:?} torch={w:?}", case.name);
            }
            total += 1;
        }
    }
    // Same operations in the same order: every rate should be bit-identical.
    assert_eq!(
        exact,
        total,
        "{} of {total} rates differ in the last bits",
        total - exact
    );
}

#[test]
fn one_cycle_errs_past_total_steps_like_pytorch() {
    let f = fixtures();
    let config =
        ScheduleConfig::from_toml("kind = \"one_cycle\"\nmax_lr = 0.1\ntotal_steps = 5").unwrap();
    let mut s = config.build(None).unwrap();
    for _ in 0..5 {
        s.step(&Observation::default()).unwrap();
    }
    // Update total_steps itself is allowed; PyTorch raises when asked for the one after.
    let e = s.step(&Observation::default()).unwrap_err();
    assert_eq!(s.updates() + 1, f.one_cycle_5_raises_at_update);
    assert!(e.to_string().contains("past total_steps = 5"), "{e}");
}
