//! For random valid configs and observations: every rate is finite and ≥ 0, and saving and
//! restoring at a random update continues exactly as the uninterrupted run.

use kiln_schedule::cyclic::CyclicMode;
use kiln_schedule::one_cycle::AnnealStrategy;
use kiln_schedule::reduce_on_plateau::{PlateauMode, ThresholdMode};
use kiln_schedule::{Kind, Observation, ScheduleConfig, Scheduler};
use proptest::prelude::*;

const STEPS: usize = 150;

fn factor() -> impl Strategy<Value = f64> {
    0.01f64..=1.0
}

/// Any schedule that can stand inside a composite.
fn leaf() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Fixed {}),
        (factor(), 0u64..20).prop_map(|(factor, total_iters)| Kind::Constant {
            factor,
            total_iters
        }),
        (factor(), 0.0f64..=1.0, 1u64..50).prop_map(|(start_factor, end_factor, total_iters)| {
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            }
        }),
        (1u64..30, 0.01f64..2.0).prop_map(|(step_size, gamma)| Kind::Step { step_size, gamma }),
        (prop::collection::vec(0u64..100, 0..5), 0.01f64..2.0)
            .prop_map(|(milestones, gamma)| Kind::MultiStep { milestones, gamma }),
        (0.5f64..1.05).prop_map(|gamma| Kind::Exponential { gamma }),
        (1u64..200, 0.0f64..4.0)
            .prop_map(|(total_iters, power)| Kind::Polynomial { total_iters, power }),
        (1u64..100, 0.0f64..0.01)
            .prop_map(|(t_max, eta_min)| Kind::CosineAnnealing { t_max, eta_min }),
        (1u64..20, 1u64..4, 0.0f64..0.01).prop_map(|(t_0, t_mult, eta_min)| {
            Kind::CosineAnnealingWarmRestarts {
                t_0,
                t_mult,
                eta_min,
            }
        }),
        (
            0.0f64..0.1,
            0.0f64..1.0,
            1u64..30,
            prop::option::of(0u64..30),
            0usize..3,
            0.5f64..1.0
        )
            .prop_map(
                |(base_lr, max_lr, step_size_up, step_size_down, mode, gamma)| Kind::Cyclic {
                    base_lr,
                    max_lr,
                    step_size_up,
                    step_size_down,
                    mode: [
                        CyclicMode::Triangular,
                        CyclicMode::Triangular2,
                        CyclicMode::ExpRange
                    ][mode],
                    gamma,
                    cycle_momentum: true,
                    base_momentum: 0.8,
                    max_momentum: 0.9,
                }
            ),
        (
            0.0f64..1.0,
            0.05f64..0.95,
            any::<bool>(),
            1.0f64..100.0,
            1.0f64..1e5,
            any::<bool>()
        )
            .prop_map(
                |(max_lr, pct_start, linear, div_factor, final_div_factor, three_phase)| {
                    Kind::OneCycle {
                        max_lr,
                        total_steps: Some(STEPS as u64 * 2),
                        epochs: None,
                        steps_per_epoch: None,
                        pct_start,
                        anneal_strategy: if linear {
                            AnnealStrategy::Linear
                        } else {
                            AnnealStrategy::Cos
                        },
                        div_factor,
                        final_div_factor,
                        three_phase,
                        cycle_momentum: true,
                        base_momentum: 0.85,
                        max_momentum: 0.95,
                    }
                }
            ),
        (0.9f64..1.0).prop_map(|factor| Kind::Multiplicative { factor }),
        (0.0f64..2.0).prop_map(|gamma| Kind::InverseTime { gamma }),
        (0.0f64..2.0).prop_map(|gamma| Kind::InverseSqrt { gamma }),
        (0.1f64..1.0, 1u64..20, any::<bool>()).prop_map(|(decay_rate, decay_steps, staircase)| {
            Kind::ExponentialDecay {
                decay_rate,
                decay_steps,
                staircase,
            }
        }),
        prop::collection::btree_set(0u64..200, 0..4)
            .prop_flat_map(|b| {
                let n = b.len() + 1;
                (
                    Just(b.into_iter().collect::<Vec<_>>()),
                    prop::collection::vec(0.0f64..1.0, n),
                )
            })
            .prop_map(|(boundaries, values)| Kind::PiecewiseConstant { boundaries, values }),
        (0.0f64..0.1, 0.0f64..0.01).prop_map(|(alpha, end_lr)| Kind::LinearDecay { alpha, end_lr }),
        (prop::collection::vec(0.0f64..5.0, 0..4), factor())
            .prop_map(|(thresholds, factor)| Kind::LossMilestones { thresholds, factor }),
        (0.1f64..1.0, 1.0f64..1.5, 0.0f64..0.01, 0.1f64..10.0).prop_map(
            |(decrease, increase, min_lr, max_lr)| {
                Kind::BoldDriver {
                    decrease,
                    increase,
                    min_lr,
                    max_lr,
                }
            }
        ),
        (0.0f64..10.0).prop_map(|beta| Kind::GradNormAdaptive { beta }),
        (0.0f64..10.0).prop_map(|beta| Kind::LossAdaptive { beta }),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => leaf(),
        1 => (0usize..2, 0.0f64..0.99, 0u64..5, 0.0f64..0.1, 0u64..3).prop_map(|(mode, factor, patience, threshold, cooldown)| {
            Kind::ReduceOnPlateau {
                mode: [PlateauMode::Min, PlateauMode::Max][mode],
                factor,
                patience,
                threshold,
                threshold_mode: ThresholdMode::Rel,
                cooldown,
                min_lr: 0.0,
                eps: 1e-8,
            }
        }),
        1 => (leaf(), leaf(), 1u64..80).prop_map(|(a, b, m)| Kind::Sequential { milestones: vec![m], schedules: vec![a, b] }),
        1 => prop::collection::vec(leaf(), 1..4).prop_map(|schedules| Kind::Chained { schedules }),
        1 => (1u64..30, factor(), leaf()).prop_map(|(steps, start_factor, then)| Kind::Warmup { steps, start_factor, then: Box::new(then) }),
    ]
}

fn observations() -> impl Strategy<Value = Vec<Observation>> {
    prop::collection::vec(
        (0.0f64..10.0, 0.0f64..100.0).prop_map(|(l, g)| Observation {
            loss: Some(l),
            grad_norm_sq: Some(g),
        }),
        STEPS,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rates_are_finite_and_non_negative_and_resume_exactly(
        kind in kind(),
        lr in 0.0f64..1.0,
        obs in observations(),
        save_at in 0usize..STEPS,
    ) {
        let config = ScheduleConfig {
            lr: Some(lr),
            interval: Default::default(),
            monitor: None,
            kind,
        };
        // Composites may reject some combinations (e.g. a composite after a milestone).
        let Ok(mut s) = config.build(None) else { return Ok(()) };
        let mut rates = Vec::new();
        let mut saved = None;
        for (t, o) in obs.iter().enumerate() {
            if t == save_at {
                saved = Some(serde_json::to_string(&s).unwrap());
            }
            let r = s.lr();
            prop_assert!(r.is_finite() && r >= 0.0, "update {}: rate {} for {:?}", t, r, config);
            rates.push(r);
            if let Err(e) = s.step(o) {
                // The only way a valid config may stop: a composition PyTorch would drive
                // negative, refused rather than passed on.
                prop_assert!(e.to_string().contains("must be finite and >= 0"), "{}", e);
                return Ok(());
            }
        }
        let mut resumed: Scheduler = serde_json::from_str(&saved.unwrap()).unwrap();
        for (t, o) in obs.iter().enumerate().skip(save_at) {
            prop_assert_eq!(resumed.lr().to_bits(), rates[t].to_bits(), "update {} after resuming at {}", t, save_at);
            resumed.step(o).unwrap();
        }
    }
}
