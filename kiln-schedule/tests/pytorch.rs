//! Every PyTorch schedule, and the composites, against the rates PyTorch 2.15 gives for the same
//! configuration (tests/fixtures/pytorch.json, made by scripts/pytorch_fixtures.py), and the
//! momentum (SGD's `momentum`, Adam's `betas[0]`) that CyclicLR and OneCycleLR cycle.

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
    /// The optimizer's momentum (β1 for Adam) before each update; its own (SGD's 0, Adam's
    /// 0.9) where no schedule cycles it.
    momenta: Vec<f64>,
    optimizer: String,
}

fn fixtures() -> Fixtures {
    let text = include_str!("fixtures/pytorch.json");
    serde_json::from_str(text).expect("fixtures parse")
}

/// Kiln's rates and momenta (`None`: the optimizer's own) for a case, stepping with the case's
/// metrics as observations, up to the first error (with the update it stopped at).
fn kiln_rates(case: &Case) -> (Vec<f64>, Vec<Option<f64>>, Option<String>) {
    let config =
        ScheduleConfig::from_toml(&case.toml).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut s = config
        .build(Some(case.lr))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut rates = Vec::new();
    let mut momenta = Vec::new();
    for t in 0..case.steps {
        rates.push(s.lr());
        momenta.push(s.momentum());
        if t + 1 < case.steps {
            let obs = match &case.metrics {
                Some(m) => Observation::value(m[t]),
                None => Observation::default(),
            };
            if let Err(e) = s.step(&obs) {
                return (rates, momenta, Some(e.to_string()));
            }
        }
    }
    (rates, momenta, None)
}

#[test]
fn every_case_matches_pytorch_bit_for_bit() {
    let f = fixtures();
    assert!(f.torch.starts_with("2."), "fixtures from torch {}", f.torch);
    let mut compared = 0;
    let mut cycled = 0;
    for case in &f.cases {
        let (got, momenta, error) = kiln_rates(case);
        let own = match case.optimizer.as_str() {
            "sgd" => 0.0,
            "adam" => 0.9,
            o => panic!("{}: optimizer {o}", case.name),
        };
        for (t, (g, w)) in momenta.iter().zip(&case.momenta).enumerate() {
            let g = g.unwrap_or(own);
            assert!(
                g.to_bits() == w.to_bits(),
                "{}: momentum of update {t}: Kiln {g:e}, PyTorch {w:e}\n{}",
                case.name,
                case.toml
            );
            cycled += usize::from(momenta[t].is_some());
        }
        for (t, (g, w)) in got.iter().zip(&case.rates).enumerate() {
            // Same operations in the same order: identical bits, not merely close values.
            assert!(
                g.to_bits() == w.to_bits(),
                "{}: update {t}: Kiln {g:e}, PyTorch {w:e}\n{}",
                case.name,
                case.toml
            );
            compared += 1;
        }
        match error {
            None => assert_eq!(got.len(), case.rates.len()),
            // The one deliberate difference: where PyTorch's rate goes negative, Kiln stops.
            Some(e) => {
                let next = case.rates[got.len()];
                assert!(
                    next < 0.0,
                    "{}: Kiln stopped at update {} ({e}) where PyTorch gave {next}",
                    case.name,
                    got.len()
                );
                assert!(e.contains("must be finite and >= 0"), "{e}");
            }
        }
    }
    assert!(compared > 3500, "only {compared} rates compared");
    assert!(cycled > 200, "only {cycled} cycled momenta compared");
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
