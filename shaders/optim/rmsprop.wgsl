// torch.optim.RMSprop, PyTorch's single-tensor rule (`_single_tensor_rmsprop`), in its order
// of float32 operations:
//   g ← −g if maximize;  g ← g + weight_decay·p  when weight_decay ≠ 0
//   square_avg ← square_avg·α + (1 − α)·g·g
//   centered: grad_avg ← lerp(grad_avg, g, 1 − α);  avg ← √(square_avg − grad_avg·grad_avg)
//   otherwise: avg ← √square_avg
//   avg ← avg + eps
//   momentum > 0: momentum_buffer ← momentum_buffer·momentum + g/avg;  p ← p − lr·momentum_buffer
//   otherwise:    p ← p + (−lr·g)/avg
// Needs shaders/update.wgsl in front. CPU twin: src/optim/rmsprop.rs.

struct RmsPropParams {
    h: UpdateHeader,
    neg_lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    maximize: u32,
    centered: u32,
    // PyTorch's momentum > 0, decided by the host on the f64 value.
    use_momentum: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(4) var<storage, read_write> square_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_avg: array<f32>;
@group(0) @binding(7) var<uniform> params: RmsPropParams;

@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = update_index(gid, nwg);
    if i >= params.h.len || update_skipped(params.h) { return; }
    let p = param[i];
    let g = l2_grad(params.h, i, p, grad[i], params.weight_decay, params.maximize != 0u);
    let sq = square_avg[i] * params.alpha + params.one_minus_alpha * g * g;
    square_avg[i] = sq;
    var avg: f32;
    if params.centered != 0u {
        let ga = lerp_pt(grad_avg[i], g, params.one_minus_alpha);
        grad_avg[i] = ga;
        avg = sqrt(sq + -ga * ga);
    } else {
        avg = sqrt(sq);
    }
    avg = avg + params.eps;
    if params.use_momentum != 0u {
        let buf = momentum_buffer[i] * params.momentum + g / avg;
        momentum_buffer[i] = buf;
        param[i] = p + params.neg_lr * buf;
    } else {
        param[i] = p + params.neg_lr * g / avg;
    }
}
