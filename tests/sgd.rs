//! torch.optim.SGD semantics, every valid option combination, on every device.
//!
//! Expected values follow PyTorch 2.x's `_single_tensor_sgd` (torch/optim/sgd.py):
//! g ← −g if maximize; g ← g + weight_decay·p; momentum buffer = g on the first step (no
//! dampening), then momentum·buf + (1 − dampening)·g; Nesterov uses g + momentum·buf;
//! p ← p − lr·g. They were computed from that rule in exact rational arithmetic (a short
//! script with Python's `fractions`), for p₀ = [1, −2], lr = 0.1 and three gradients.

mod common;

use kiln::Device;
use kiln::optim::{Optimizer, Sgd};

const GRADS: [[f32; 2]; 3] = [[0.5, 0.25], [-1.0, 0.75], [0.125, -0.5]];

/// (momentum, dampening, weight_decay, nesterov, maximize, parameters after each step)
type Case = (f64, f64, f64, bool, bool, [[f64; 2]; 3]);

#[rustfmt::skip]
const CASES: [Case; 16] = [
    (0.0, 0.0, 0.0, false, false, [[0.95, -2.025], [1.05, -2.1], [1.0375, -2.05]]),
    (0.0, 0.0, 0.0, false, true, [[1.05, -1.975], [0.95, -1.9], [0.9625, -1.95]]),
    (0.0, 0.0, 0.1, false, false, [[0.94, -2.005], [1.0306, -2.05995], [1.007794, -1.9893505]]),
    (0.0, 0.0, 0.1, false, true, [[1.04, -1.955], [0.9296, -1.86045], [0.932804, -1.8918455]]),
    (0.9, 0.0, 0.0, false, false, [[0.95, -2.025], [1.005, -2.1225], [1.042, -2.16025]]),
    (0.9, 0.0, 0.0, false, true, [[1.05, -1.975], [0.995, -1.8775], [0.958, -1.83975]]),
    (0.9, 0.0, 0.0, true, false, [[0.905, -2.0475], [1.0545, -2.21025], [1.0753, -2.194225]]),
    (0.9, 0.0, 0.0, true, true, [[1.095, -1.9525], [0.9455, -1.78975], [0.9247, -1.805775]]),
    (0.9, 0.0, 0.1, false, false, [[0.94, -2.005], [0.9766, -2.06445], [0.987274, -2.0473105]]),
    (0.9, 0.0, 0.1, false, true, [[1.04, -1.955], [0.9656, -1.81995], [0.901484, -1.7302055]]),
    (0.9, 0.0, 0.1, true, false, [[0.886, -2.0095], [1.010566, -2.1178695], [0.997698646, -2.0307480295]]),
    (0.9, 0.0, 0.1, true, true, [[1.076, -1.9145], [0.897956, -1.6991745], [0.844089236, -1.6528277345]]),
    (0.9, 0.5, 0.0, false, false, [[0.95, -2.025], [0.955, -2.085], [0.95325, -2.114]]),
    (0.9, 0.5, 0.0, false, true, [[1.05, -1.975], [1.045, -1.915], [1.04675, -1.886]]),
    (0.9, 0.5, 0.1, false, false, [[0.94, -2.005], [0.9313, -2.036975], [0.9125635, -2.030567625]]),
    (0.9, 0.5, 0.1, false, true, [[1.04, -1.955], [1.0208, -1.867225], [1.004666, -1.803891375]]),
];

fn every_combination(device: &Device) {
    for (momentum, dampening, weight_decay, nesterov, maximize, want) in CASES {
        let opts = Sgd {
            momentum,
            dampening,
            weight_decay,
            nesterov,
            maximize,
        };
        let sgd = Optimizer::new(opts).unwrap();
        let mut p = vec![1.0f32, -2.0];
        let mut state = sgd.new_state(2);
        for (step, g) in GRADS.iter().enumerate() {
            device.update(&sgd, 0.1, &mut p, g, &mut state).unwrap();
            let want: Vec<f32> = want[step].iter().map(|&v| v as f32).collect();
            common::assert_close(
                &format!("{opts:?} after step {step}"),
                &p,
                &want,
                common::SGD,
            );
        }
    }
}
test_device!(sgd_matches_pytorch_rule, super::every_combination);

fn momentum_buffer_is_pytorchs(device: &Device) {
    // After the first step the buffer is the (decayed) gradient itself, undamped.
    let sgd = Optimizer::new(Sgd {
        momentum: 0.9,
        dampening: 0.5,
        weight_decay: 0.1,
        ..Default::default()
    })
    .unwrap();
    let mut p = vec![1.0f32, -2.0];
    let mut state = sgd.new_state(2);
    device
        .update(&sgd, 0.1, &mut p, &GRADS[0], &mut state)
        .unwrap();
    // g + wd·p = [0.5 + 0.1, 0.25 − 0.2]
    common::assert_close("buffer", &state.blocks[0], &[0.6, 0.05], common::SGD);
}
test_device!(
    first_momentum_step_copies_gradient,
    super::momentum_buffer_is_pytorchs
);

#[test]
fn nesterov_needs_momentum_and_zero_dampening() {
    for opts in [
        Sgd {
            nesterov: true,
            ..Default::default()
        },
        Sgd {
            nesterov: true,
            momentum: 0.9,
            dampening: 0.1,
            ..Default::default()
        },
    ] {
        let err = Optimizer::new(opts).unwrap_err().to_string();
        assert!(err.contains("nesterov"), "{err}");
    }
    let err = Optimizer::new(Sgd {
        momentum: -0.5,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("optimizer.momentum"), "{err}");
}

/// torch.nn.utils.clip_grad_norm_([a, b], max_norm) with a.grad = [3, 4],
/// b.grad = [12, −0.5, 0.25], printed by PyTorch 2.15 (f32, shortest form): the norm is returned before
/// clipping, and nothing changes when it is under max_norm.
fn clip_matches_pytorch(device: &Device) {
    let mut g = vec![3.0f32, 4.0, 12.0, -0.5, 0.25];
    let norm = device.clip_grad_norm(&mut g, 6.5).unwrap();
    common::assert_close("norm", &[norm], &[13.012013], common::SGD);
    let want = [1.498615, 1.9981534, 5.99446, -0.24976918, 0.12488459];
    common::assert_close("clipped", &g, &want, common::SGD);

    let mut g = vec![3.0f32, 4.0, 12.0, -0.5, 0.25];
    device.clip_grad_norm(&mut g, 100.0).unwrap();
    assert_eq!(g, [3.0, 4.0, 12.0, -0.5, 0.25]);
    let e = device.clip_grad_norm(&mut g, 0.0).unwrap_err().to_string();
    assert!(e.contains("max_norm must be finite and > 0"), "{e}");
}
test_device!(clip_grad_norm_matches_pytorch, super::clip_matches_pytorch);
