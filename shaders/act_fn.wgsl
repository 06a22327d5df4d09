// The elementwise activations and their gradients as functions of one value: what
// activation.wgsl's kernels apply, and what the matmul applies in its epilogue when an
// activation is fused into it (`EPI`, `ACT`). One definition, so the fused and the separate
// kernels compute the same expression. The host puts this file in front of both
// (src/gpu/kernels.rs); it stands alone too. CPU twin: src/cpu/activation.rs.

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_KAPPA: f32 = 0.044715;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;
const FRAC_1_SQRT_2PI: f32 = 0.3989422804014327;

// Activation ids, as `kernels::fused_activation_id` numbers them; 0 is "none".
const ACT_IDENTITY: u32 = 1u;
const ACT_RELU: u32 = 2u;
const ACT_LEAKY_RELU: u32 = 3u;
const ACT_SIGMOID: u32 = 4u;
const ACT_TANH: u32 = 5u;
const ACT_GELU: u32 = 6u;
const ACT_GELU_TANH: u32 = 7u;

// erf for f32, Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), as WGSL has no erf builtin.
fn erf_approx(v: f32) -> f32 {
    let s = sign(v);
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-z * z));
}

// tanh saturates to ±1 in f32 well before |v| = 10; clamping keeps drivers that build tanh from
// exp from producing inf/inf.
fn tanh_safe(v: f32) -> f32 {
    return tanh(clamp(v, -10.0, 10.0));
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

fn leaky_relu(v: f32, slope: f32) -> f32 {
    return select(v * slope, v, v > 0.0);
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
}

fn gelu_tanh(v: f32) -> f32 {
    let inner = SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v);
    return 0.5 * v * (1.0 + tanh_safe(inner));
}

// Activation `id` of v (`alpha`: leaky_relu's slope). With `id` a pipeline constant the branch
// folds away.
fn activate(id: u32, v: f32, alpha: f32) -> f32 {
    switch id {
        case ACT_RELU: { return max(v, 0.0); }
        case ACT_LEAKY_RELU: { return leaky_relu(v, alpha); }
        case ACT_SIGMOID: { return sigmoid(v); }
        case ACT_TANH: { return tanh_safe(v); }
        case ACT_GELU: { return gelu(v); }
        case ACT_GELU_TANH: { return gelu_tanh(v); }
        default: { return v; }
    }
}

// dL/dx = g · act'(·), as PyTorch writes each backward: from the input x (relu, leaky_relu,
// gelu) or the output y (sigmoid, tanh) — `v` is whichever `Activation::grad_reads_output`
// says.
fn act_grad(id: u32, g: f32, v: f32, alpha: f32) -> f32 {
    switch id {
        case ACT_RELU: { return select(0.0, g, v > 0.0); }
        case ACT_LEAKY_RELU: { return select(g * alpha, g, v > 0.0); }
        case ACT_SIGMOID: { return g * (1.0 - v) * v; }
        case ACT_TANH: { return g * (1.0 - v * v); }
        case ACT_GELU: {
            let cdf = 0.5 * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
            return g * (cdf + v * pdf);
        }
        // PyTorch's GeluBackward with approximate='tanh'.
        case ACT_GELU_TANH: {
            let v2 = v * v;
            let t = tanh_safe(SQRT_2_OVER_PI * (v + GELU_KAPPA * v2 * v));
            let left_derivative = 0.5 * (1.0 + t);
            let right_derivative = 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v2);
            return g * (left_derivative + right_derivative);
        }
        default: { return g; }
    }
}
