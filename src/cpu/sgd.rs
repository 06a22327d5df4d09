//! CPU twin of `shaders/sgd.wgsl`: torch.optim.SGD's update, in the same order of operations.

use crate::ops::SgdOptions;

/// Parameters per thread below which one thread does the whole update: starting a thread
/// costs about as much as updating this many on one.
const PER_THREAD: usize = 1 << 17;

/// Updates `param` (and `momentum_buf` when momentum ≠ 0) in place. `first_step` starts the
/// momentum buffer as a copy of the gradient, as PyTorch does when it has no buffer yet.
/// Large updates are split over all cores; every element's arithmetic is the same either way.
pub fn sgd(
    opts: &SgdOptions,
    lr: f32,
    first_step: bool,
    param: &mut [f32],
    grad: &[f32],
    momentum_buf: &mut [f32],
) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(param.len() / PER_THREAD);
    if threads <= 1 {
        return sgd_chunk(opts, lr, first_step, param, grad, momentum_buf);
    }
    let chunk = param.len().div_ceil(threads);
    let use_momentum = opts.momentum != 0.0;
    let mut buf_chunks = momentum_buf.chunks_mut(chunk);
    std::thread::scope(|scope| {
        for (p, g) in param.chunks_mut(chunk).zip(grad.chunks(chunk)) {
            let buf = match buf_chunks.next() {
                Some(b) if use_momentum => b,
                _ => &mut [],
            };
            scope.spawn(move || sgd_chunk(opts, lr, first_step, p, g, buf));
        }
    });
}

/// One thread's share. Written as zipped iterators, without indexing, so the compiler can
/// vectorise it; the operations and their order are `sgd.wgsl`'s.
fn sgd_chunk(
    opts: &SgdOptions,
    lr: f32,
    first_step: bool,
    param: &mut [f32],
    grad: &[f32],
    momentum_buf: &mut [f32],
) {
    let decayed = |p: f32, g: f32| {
        let g = if opts.maximize { -g } else { g };
        if opts.weight_decay != 0.0 {
            g + opts.weight_decay * p
        } else {
            g
        }
    };
    if opts.momentum == 0.0 {
        for (p, &g) in param.iter_mut().zip(grad) {
            *p -= lr * decayed(*p, g);
        }
        return;
    }
    for ((p, &g), buf) in param.iter_mut().zip(grad).zip(momentum_buf.iter_mut()) {
        let g = decayed(*p, g);
        let b = if first_step {
            g
        } else {
            opts.momentum * *buf + (1.0 - opts.dampening) * g
        };
        *buf = b;
        let g = if opts.nesterov {
            g + opts.momentum * b
        } else {
            b
        };
        *p -= lr * g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split over threads or not, every element gets the same arithmetic: bit-identical, for
    /// every option that changes the loop, and a length that does not divide evenly.
    #[test]
    fn the_threaded_update_equals_the_single_threaded_one() {
        let n = 3 * PER_THREAD + 5;
        let grad: Vec<f32> = (0..n).map(|i| ((i % 101) as f32 - 50.0) * 1e-3).collect();
        let start: Vec<f32> = (0..n).map(|i| ((i % 37) as f32 - 18.0) * 1e-2).collect();
        for (momentum, nesterov, weight_decay, maximize, first_step) in [
            (0.0, false, 0.0, false, false),
            (0.0, false, 1e-2, true, false),
            (0.9, false, 0.0, false, true),
            (0.9, false, 0.0, false, false),
            (0.9, true, 1e-2, true, false),
        ] {
            let opts = SgdOptions {
                momentum,
                nesterov,
                weight_decay,
                maximize,
                dampening: 0.0,
            };
            let (mut p1, mut b1) = (start.clone(), start.clone());
            let (mut p2, mut b2) = (start.clone(), start.clone());
            sgd(&opts, 0.1, first_step, &mut p1, &grad, &mut b1);
            sgd_chunk(&opts, 0.1, first_step, &mut p2, &grad, &mut b2);
            assert!(p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()));
            assert!(b1.iter().zip(&b2).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
