//! CPU twin of `shaders/sgd.wgsl`: torch.optim.SGD's update, in the same order of operations.

use crate::ops::SgdOptions;

/// Updates `param` (and `momentum_buf` when momentum ≠ 0) in place. `first_step` starts the
/// momentum buffer as a copy of the gradient, as PyTorch does when it has no buffer yet.
pub fn sgd(
    opts: &SgdOptions,
    lr: f32,
    first_step: bool,
    param: &mut [f32],
    grad: &[f32],
    momentum_buf: &mut [f32],
) {
    let use_momentum = opts.momentum != 0.0;
    for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
        let mut g = if opts.maximize { -g } else { g };
        if opts.weight_decay != 0.0 {
            g += opts.weight_decay * *p;
        }
        if use_momentum {
            let buf = if first_step {
                g
            } else {
                opts.momentum * momentum_buf[i] + (1.0 - opts.dampening) * g
            };
            momentum_buf[i] = buf;
            g = if opts.nesterov {
                g + opts.momentum * buf
            } else {
                buf
            };
        }
        *p -= lr * g;
    }
}
