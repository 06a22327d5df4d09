//! CPU twin of `shaders/activation.wgsl`: activations forward and backward over [rows, cols].

use crate::ops::Activation;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_KAPPA: f32 = 0.044715;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// y = f(x). Softmax works along rows of `cols` elements.
pub fn forward(act: Activation, x: &[f32], cols: usize, y: &mut [f32]) {
    let x = &x[..y.len()];
    match act {
        Activation::Identity => y.copy_from_slice(x),
        Activation::Relu => map(x, y, |v| v.max(0.0)),
        Activation::LeakyRelu(slope) => map(x, y, |v| if v > 0.0 { v } else { v * slope }),
        Activation::Sigmoid => map(x, y, sigmoid),
        Activation::Tanh => map(x, y, f32::tanh),
        Activation::Gelu => map(x, y, |v| {
            0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
        }),
        Activation::GeluTanh => map(x, y, |v| {
            0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v)).tanh())
        }),
        Activation::Softmax => {
            for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
                let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut s = 0.0;
                for (o, v) in yr.iter_mut().zip(xr) {
                    *o = (v - m).exp();
                    s += *o;
                }
                let inv = 1.0 / s;
                yr.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// dx = dy·f'(x), given the forward's input `x` and output `y`.
pub fn backward(act: Activation, x: &[f32], y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    let n = dx.len();
    let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
    match act {
        Activation::Identity => dx.copy_from_slice(dy),
        Activation::Relu => zip_map(x, dy, dx, |v, g| if v > 0.0 { g } else { 0.0 }),
        Activation::LeakyRelu(slope) => {
            zip_map(x, dy, dx, |v, g| if v > 0.0 { g } else { g * slope })
        }
        Activation::Sigmoid => zip_map(y, dy, dx, |s, g| g * (1.0 - s) * s),
        Activation::Tanh => zip_map(y, dy, dx, |t, g| g * (1.0 - t * t)),
        Activation::Gelu => zip_map(x, dy, dx, |v, g| {
            let cdf = 0.5 * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f32::consts::PI).sqrt();
            g * (cdf + v * pdf)
        }),
        // PyTorch's GeluBackward, approximate='tanh'.
        Activation::GeluTanh => zip_map(x, dy, dx, |v, g| {
            let v2 = v * v;
            let t = (SQRT_2_OVER_PI * (v + GELU_KAPPA * v2 * v)).tanh();
            let left_derivative = 0.5 * (1.0 + t);
            let right_derivative =
                0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v2);
            g * (left_derivative + right_derivative)
        }),
        Activation::Softmax => {
            for ((yr, gr), dr) in y
                .chunks_exact(cols)
                .zip(dy.chunks_exact(cols))
                .zip(dx.chunks_exact_mut(cols))
            {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for ((d, s), g) in dr.iter_mut().zip(yr).zip(gr) {
                    *d = s * (g - dot);
                }
            }
        }
    }
}

fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, v) in y.iter_mut().zip(x) {
        *o = f(*v);
    }
}

fn zip_map(a: &[f32], g: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, a), g) in out.iter_mut().zip(a).zip(g) {
        *o = f(*a, *g);
    }
}
