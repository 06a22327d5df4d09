// The first half of every Adam-family update (Adam/AdamW, NAdam, RAdam), in PyTorch's order of
// float32 operations; the host puts it after shaders/update.wgsl and before the optimizer's
// own file. CPU twin: `Moments` in src/optim/mod.rs.
//   g ← −g if maximize
//   p ← p·(1 − lr·weight_decay)  decoupled, or  g ← g + weight_decay·p,  when weight_decay ≠ 0
//   exp_avg    ← lerp(exp_avg, g, 1 − β1)
//   exp_avg_sq ← exp_avg_sq·β2 + (1 − β2)·g·g

@group(0) @binding(4) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<f32>;

// What the second half reads: the (decayed) parameter, the gradient as used, both moments.
struct Moved {
    p: f32,
    g: f32,
    m: f32,
    v: f32,
}

fn adam_moments(
    h: UpdateHeader,
    i: u32,
    decay_factor: f32,
    weight_decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    maximize: bool,
    decoupled: bool,
) -> Moved {
    // All four loads go out before the first arithmetic on a loaded value (see sgd.wgsl).
    var p = param[i];
    var g = grad[i];
    let m_in = exp_avg[i];
    let v_in = exp_avg_sq[i];
    if maximize {
        g = -g;
    }
    if weight_decay != 0.0 && decays(h, i) {
        if decoupled {
            p = p * decay_factor;
        } else {
            g = g + weight_decay * p;
        }
    }
    let m = lerp_pt(m_in, g, one_minus_beta1);
    exp_avg[i] = m;
    let v = v_in * beta2 + one_minus_beta2 * g * g;
    exp_avg_sq[i] = v;
    return Moved(p, g, m, v);
}
