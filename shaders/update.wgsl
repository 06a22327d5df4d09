// The part every optimizer kernel shares; the host puts it in front of each file of
// shaders/optim/ (this file alone is valid WGSL too, so the shader tests validate it).
// Bindings 0–3 are the same for every optimizer; its state tensors follow from binding 4,
// and its uniform block, which starts with the four words of `UpdateHeader`, comes last.
// The skip-if-non-finite rule and the weight-decay mask live here, once for all optimizers.
// Rust side: src/optim/mod.rs (UpdateUniform).

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// Loss history of the step program: the loss this update must find finite.
@group(0) @binding(2) var<storage, read> loss_history: array<f32>;
// [start, end) element ranges that take no weight decay (biases, with decay_biases = false).
@group(0) @binding(3) var<storage, read> no_decay: array<vec2<u32>>;

// The first words of every optimizer's uniform block.
struct UpdateHeader {
    len: u32,
    // Loss-history slot whose value must be finite for the update to happen; NO_SKIP: none.
    skip_slot: u32,
    // How many entries of `no_decay` apply.
    no_decay_count: u32,
    // Arena index of element 0 of the bound range (the kernel may run on one chunk of an
    // arena; `no_decay` holds arena indices).
    base: u32,
}

const NO_SKIP: u32 = 0xffffffffu;
const UPDATE_WORKGROUP: u32 = 256u;

fn is_finite(v: f32) -> bool {
    // Exponent all ones: infinity or NaN. (Compilers may fold v != v away.)
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// The element this invocation updates, or `len` and above for invocations past the end.
fn update_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * UPDATE_WORKGROUP + gid.x;
}

// Whether `--on-nan skip` drops this update: its batch loss is NaN or infinite. Then no
// parameter and no state changes.
fn update_skipped(h: UpdateHeader) -> bool {
    return h.skip_slot != NO_SKIP && !is_finite(loss_history[h.skip_slot]);
}

// Whether element i of the bound range takes weight decay. The list is a handful of bias
// ranges at most (one per dense layer), read by every thread alike, so the loop costs little.
fn decays(h: UpdateHeader, i: u32) -> bool {
    let at = h.base + i;
    for (var r = 0u; r < h.no_decay_count; r++) {
        let span = no_decay[r];
        if at >= span.x && at < span.y {
            return false;
        }
    }
    return true;
}

// The gradient of the rules with L2 (coupled) weight decay, as PyTorch forms it: −g if
// maximize, then + weight_decay·p where the parameter decays.
fn l2_grad(h: UpdateHeader, i: u32, p: f32, g: f32, weight_decay: f32, maximize: bool) -> f32 {
    var r = g;
    if maximize {
        r = -r;
    }
    if weight_decay != 0.0 && decays(h, i) {
        r = r + weight_decay * p;
    }
    return r;
}

// torch.maximum(a, b): NaN when either is, where WGSL's max may return the other. NaN is
// found by its bits, since naga compiles `v != v` to an ordered comparison (false for NaN).
// (`maximum` in src/optim/mod.rs.)
fn maximum_pt(a: f32, b: f32) -> f32 {
    let nan_a = (bitcast<u32>(a) & 0x7fffffffu) > 0x7f800000u;
    let nan_b = (bitcast<u32>(b) & 0x7fffffffu) > 0x7f800000u;
    if nan_a || nan_b {
        return bitcast<f32>(0x7fc00000u);
    }
    return max(a, b);
}

// torch.lerp(start, end, weight) for a scalar weight, as PyTorch computes it: the form that is
// exact at the end nearer to the weight. (`lerp` in src/optim/mod.rs.)
fn lerp_pt(start: f32, end: f32, weight: f32) -> f32 {
    if abs(weight) < 0.5 {
        return start + weight * (end - start);
    }
    return end - (end - start) * (1.0 - weight);
}
