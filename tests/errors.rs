//! Bad input gives an `Err` whose message names the problem, never a panic.

mod common;

use kiln::schedule::Scheduler;
use kiln::train::TrainOptions;
use kiln::{
    Activation, AdapterOptions, Device, GpuContext, Layer, Loss, MatmulDims, Sequential, Targets,
    Trainer, Transpose,
};

fn trainer(device: &Device) -> Trainer {
    let model = Sequential::new(
        2,
        vec![
            Layer::Dense { out: 4 },
            Layer::Activation(Activation::Relu),
            Layer::Dense { out: 3 },
        ],
        Loss::CrossEntropy,
    )
    .unwrap();
    let options = TrainOptions {
        optimizer: Default::default(),
        max_batch: 4,
        seed: 0,
        ..Default::default()
    };
    Trainer::new(device, model, options, Scheduler::fixed(0.1).unwrap()).unwrap()
}

fn message<T: std::fmt::Debug>(r: kiln::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn bad_batches(device: &Device) {
    let mut t = trainer(device);
    let e = message(t.step(&[1.0, 2.0, 3.0], Targets::Classes(&[0])));
    assert!(
        e.contains("`x` has 3 elements") && e.contains("rows of 2"),
        "{e}"
    );

    let e = message(t.step(&[1.0, 2.0, 3.0, 4.0], Targets::Classes(&[0])));
    assert!(e.contains("labels") && e.contains("expected 2"), "{e}");

    let e = message(t.step(&[1.0, 2.0, 3.0, 4.0], Targets::Classes(&[0, 3])));
    assert_eq!(e, "label 3 at row 1 is out of range for 3 classes");

    let e = message(t.step(&[1.0, f32::NAN, 3.0, 4.0], Targets::Classes(&[0, 1])));
    assert!(
        e.contains("input batch `x` contains a non-finite value (NaN) at index 1"),
        "{e}"
    );

    let e = message(t.step(&[0.0; 10], Targets::Classes(&[0; 5])));
    assert!(e.contains("over max_batch = 4"), "{e}");

    let e = message(t.step(&[1.0, 2.0], Targets::Values(&[0.0, 1.0, 0.0])));
    assert!(
        e.contains("cross_entropy needs integer class labels"),
        "{e}"
    );

    // Nothing above reached the device: the trainer still works.
    t.step(&[1.0, 2.0], Targets::Classes(&[2])).unwrap();
    assert_eq!(t.losses().unwrap().len(), 1);
}
test_device!(bad_batches_are_errors, super::bad_batches);

/// A value that is not finite anywhere in a batch (past the first run a GPU checks as it
/// copies, at the very end, at the start) is named by its index, and changes nothing: not the
/// parameters, not the schedule (a rate that decays every update), not the loss history.
fn a_bad_value_anywhere_in_a_batch_changes_nothing(device: &Device) {
    let model = Sequential::new(600, vec![Layer::Dense { out: 3 }], Loss::CrossEntropy).unwrap();
    let make = || {
        let options = TrainOptions {
            max_batch: 4,
            ..Default::default()
        };
        let schedule =
            Scheduler::from_kind(0.1, kiln::schedule::Kind::Exponential { gamma: 0.5 }).unwrap();
        Trainer::new(device, model.clone(), options, schedule).unwrap()
    };
    let (mut t, mut fresh) = (make(), make());
    let x: Vec<f32> = (0..2400).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let labels = [0, 1, 2, 0];
    for (at, bad) in [
        (2000, f32::NAN),
        (2399, f32::INFINITY),
        (0, f32::NEG_INFINITY),
    ] {
        let mut x_bad = x.clone();
        x_bad[at] = bad;
        if let Some(later) = x_bad.get_mut(at + 5) {
            *later = f32::NAN;
        }
        let e = message(t.step(&x_bad, Targets::Classes(&labels)));
        assert!(
            e.contains("input batch `x` contains a non-finite value")
                && e.contains(&format!("at index {at}")),
            "{at}: {e}"
        );
    }
    assert!(t.losses().unwrap().is_empty());
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for _ in 0..2 {
        assert_eq!(
            t.step(&x, Targets::Classes(&labels)).unwrap(),
            fresh.step(&x, Targets::Classes(&labels)).unwrap(),
            "the rate"
        );
    }
    assert_eq!(t.losses().unwrap(), fresh.losses().unwrap());
    assert_eq!(
        bits(t.parameters().unwrap()),
        bits(fresh.parameters().unwrap())
    );
}
test_device!(
    a_bad_value_changes_nothing,
    super::a_bad_value_anywhere_in_a_batch_changes_nothing
);

fn bad_kernel_inputs(device: &Device) {
    let dims = MatmulDims { m: 2, n: 3, k: 4 };
    let e = message(device.matmul(&[0.0; 7], &[0.0; 12], None, dims, Transpose::Nn));
    assert!(e.contains("`a` has 7 elements, expected 8 ([2, 4])"), "{e}");
    let e = message(device.matmul(&[0.0; 8], &[0.0; 12], Some(&[0.0; 2]), dims, Transpose::Nn));
    assert!(e.contains("`bias` has 2 elements, expected 3"), "{e}");
    let e = message(device.matmul(
        &[],
        &[],
        None,
        MatmulDims { m: 0, n: 1, k: 1 },
        Transpose::Nn,
    ));
    assert!(e.contains("M must be at least 1"), "{e}");
    // Sizes whose products wrap around are errors, not a product of the wrapped sizes.
    let e = message(device.matmul(
        &[0.0; 2],
        &[0.0; 4],
        None,
        MatmulDims {
            m: (1 << 63) + 1,
            n: 2,
            k: 2,
        },
        Transpose::Nn,
    ));
    assert!(e.contains("more elements than can be counted"), "{e}");
    // An optimizer step on a state or gradient no run could have made.
    let adam = kiln::Optimizer::new(kiln::optim::Adam::default()).unwrap();
    let mut p = vec![1.0f32];
    let mut state = adam.new_state(1);
    state.scalars.insert("step".into(), -1.0);
    let e = message(device.update(&adam, 0.1, &mut p, &[0.5], &mut state));
    assert!(e.contains("step"), "{e}");
    let mut state = adam.new_state(1);
    let e = message(device.update(&adam, 0.1, &mut p, &[f32::NAN], &mut state));
    assert!(e.contains("grad contains a non-finite value"), "{e}");
    assert_eq!(p, [1.0]);
    let e = message(device.activation_forward(Activation::Softmax, &[0.0; 5], 2));
    assert!(
        e.contains("not a non-empty whole number of rows of 2"),
        "{e}"
    );
    let e = message(device.loss(Loss::Mse, &[0.0; 4], Targets::Values(&[0.0; 3]), 2));
    assert!(e.contains("`targets` has 3 elements, expected 4"), "{e}");
    let e = message(device.loss(
        Loss::Mse,
        &[0.0; 2],
        Targets::Values(&[0.0, f32::INFINITY]),
        2,
    ));
    assert!(
        e.contains("targets contains a non-finite value (inf) at index 1"),
        "{e}"
    );
    // BCE's log needs probabilities, as torch.nn.BCELoss checks.
    let e = message(device.loss(Loss::Bce, &[0.5, 2.0], Targets::Values(&[1.0, 0.0]), 1));
    assert!(
        e.contains("outputs in [0, 1]") && e.contains("element 1 is 2"),
        "{e}"
    );
    for slope in [f32::NAN, f32::INFINITY] {
        let act = Activation::LeakyRelu(slope);
        let e = message(device.activation_forward(act, &[0.0; 2], 2));
        assert!(e.contains("leaky_relu slope must be finite"), "{e}");
        let e = message(device.activation_backward(act, &[0.0; 2], &[0.0; 2], &[0.0; 2], 2));
        assert!(e.contains("leaky_relu slope must be finite"), "{e}");
    }
    // A rate finite in f64 but inf in the f32 the update runs in.
    let mut state = adam.new_state(1);
    let e = message(device.update(&adam, 1e39, &mut p, &[0.5], &mut state));
    assert!(e.contains("lr") && e.contains("past f32's largest"), "{e}");
    assert_eq!(p, [1.0]);
}
test_device!(bad_kernel_inputs_are_errors, super::bad_kernel_inputs);

/// Mesa's llvmpipe (lavapipe) ends a shader invocation's loops after 65,535 iterations in all
/// and the results are silently wrong: a kernel that could run that long there is refused,
/// naming the adapter; just under the cap it runs and agrees with the CPU.
#[test]
fn kernels_a_driver_would_cut_short_are_refused() {
    let Some(ctx) = common::gpu() else { return };
    let Some(limit) = ctx.loop_limit() else {
        // A driver without the cap: nothing to refuse (these sizes run).
        return;
    };
    assert_eq!(limit, 65_535);
    let gpu = Device::Gpu(ctx.clone());
    let tile = kiln::gpu::matmul_tiles::TileConfig::parse("32x32x16/4x4").unwrap();
    let product = |k: usize| {
        let a: Vec<f32> = (0..k).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
        let b: Vec<f32> = (0..k).map(|i| ((i % 5) as f32 - 2.0) * 0.5).collect();
        let dims = MatmulDims { m: 1, n: 1, k };
        (
            ctx.matmul_with_tile(&a, &b, None, dims, Transpose::Nn, tile),
            Device::Cpu
                .matmul(&a, &b, None, dims, Transpose::Nn)
                .unwrap(),
        )
    };
    // Every partial sum is a multiple of 1/8 well within f32's integers: exact on both.
    let (gpu_c, cpu_c) = product(40_000);
    assert_eq!(gpu_c.unwrap(), cpu_c);
    let e = message(product(70_000).0);
    assert!(
        e.contains("matmul 1x1x70000") && e.contains("llvmpipe") && e.contains("65535"),
        "{e}"
    );
    let e = message(gpu.activation_forward(Activation::Softmax, &vec![0.0; 30_000], 30_000));
    assert!(
        e.contains("softmax") && e.contains("90000 loop iterations"),
        "{e}"
    );
    let e = message(gpu.loss(
        Loss::CrossEntropy,
        &vec![0.0; 65_536],
        Targets::Classes(&[3]),
        65_536,
    ));
    assert!(
        e.contains("cross_entropy loss") && e.contains("llvmpipe"),
        "{e}"
    );
    // A trainer is refused before it allocates: 22,000 classes are 66,000 iterations of
    // cross-entropy's row walks.
    let wide = Sequential::new(2, vec![Layer::Dense { out: 22_000 }], Loss::CrossEntropy).unwrap();
    let options = TrainOptions {
        max_batch: 1,
        ..Default::default()
    };
    let e = message(Trainer::new(
        &gpu,
        wide,
        options,
        Scheduler::fixed(0.1).unwrap(),
    ));
    assert!(
        e.contains("cross_entropy loss") && e.contains("66000"),
        "{e}"
    );
}

#[test]
fn bad_models_are_errors() {
    let e = message(Sequential::new(3, vec![Layer::Dense { out: 0 }], Loss::Mse));
    assert_eq!(e, "invalid model.layers[0]: dense layer with zero width");
    let e = message(Sequential::new(0, vec![Layer::Dense { out: 1 }], Loss::Mse));
    assert!(e.contains("model.input"), "{e}");
    let e = message(Sequential::new(
        3,
        vec![Layer::Activation(Activation::Relu)],
        Loss::Mse,
    ));
    assert!(e.contains("at least one dense layer"), "{e}");
    let e = message(Activation::from_name("swish"));
    assert!(
        e.contains("unknown activation \"swish\"") && e.contains("gelu_tanh"),
        "{e}"
    );
    let e = message(Loss::from_name("hinge"));
    assert!(e.contains("unknown loss \"hinge\""), "{e}");
    // A layout built by hand whose tensors pass the arena's end.
    let model = Sequential::new(3, vec![Layer::Dense { out: 2 }], Loss::Mse).unwrap();
    let mut layout = model.param_layout(kiln::train::PARAM_ALIGN);
    layout.dense[0].weight = layout.len - 1;
    let e = message(model.init_params(&layout, 0));
    assert!(
        e.contains("layout.dense[0]") && e.contains("weight ends past"),
        "{e}"
    );
    let params = vec![0.0; layout.len];
    let path = std::env::temp_dir().join(format!("kiln-bad-layout-{}", std::process::id()));
    let e = message(kiln::weights::save(&path, &layout, &params, None));
    assert!(e.contains("layout.dense[0]"), "{e}");
    assert!(!path.exists());
}

#[test]
fn unknown_adapter_lists_the_adapters_there_are() {
    let Some(gpu) = common::gpu() else { return };
    let opts = AdapterOptions {
        adapter: Some("no-such-gpu-xyz".into()),
        ..Default::default()
    };
    let e = message(GpuContext::new(&opts));
    assert!(
        e.contains("no-such-gpu-xyz") && e.contains(&gpu.info().name),
        "{e}"
    );
    let e = message(GpuContext::new(&AdapterOptions {
        backend: Some("glide".into()),
        ..Default::default()
    }));
    assert!(e.contains("unknown backend \"glide\""), "{e}");
    // Also when the CPU device is chosen: the typo is not silently ignored.
    let e = message(kiln::Device::select(
        kiln::DeviceChoice::Cpu,
        &AdapterOptions {
            backend: Some("glide".into()),
            ..Default::default()
        },
    ));
    assert!(e.contains("unknown backend \"glide\""), "{e}");
}

#[test]
fn buffers_over_the_device_limits_are_errors() {
    let Some(gpu) = common::gpu() else { return };
    let binding = gpu.limits().max_storage_buffer_binding_size as usize;
    let e = message(gpu.storage_buffer("huge weight", binding / 4 + 1));
    assert!(
        e.contains("huge weight") && e.contains("max_storage_buffer_binding_size"),
        "{e}"
    );
    // A model whose layer would not fit is refused when the trainer is built.
    let width = (binding / 4).isqrt() + 1;
    let model = Sequential::new(width, vec![Layer::Dense { out: width }], Loss::Mse).unwrap();
    let options = TrainOptions {
        optimizer: Default::default(),
        max_batch: 1,
        seed: 0,
        ..Default::default()
    };
    let params = vec![0.0; model.param_layout(kiln::train::PARAM_ALIGN).len];
    let e = message(Trainer::with_params(
        &Device::Gpu(gpu),
        model,
        options,
        Scheduler::fixed(0.1).unwrap(),
        params,
    ));
    // The tensor is named: a matmul binds each weight whole, so its arena cannot split it.
    assert!(
        e.contains("parameter layers.0.weight") && e.contains("max_storage_buffer_binding_size"),
        "{e}"
    );
}

#[test]
fn wgpu_validation_errors_become_err_on_the_next_call() {
    // A private context: the error must not leak into other tests sharing the common one.
    let Some(shared) = common::gpu() else { return };
    let _ = shared;
    let ctx = GpuContext::new(&AdapterOptions::from_env()).unwrap();
    // MAP_READ may only be combined with COPY_DST: wgpu reports a validation error, which
    // Kiln must hold instead of letting wgpu panic.
    let _bad = ctx.device.create_buffer(&kiln::wgpu::BufferDescriptor {
        label: Some("invalid usage"),
        size: 16,
        usage: kiln::wgpu::BufferUsages::MAP_READ | kiln::wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = message(ctx.check_errors());
    assert!(
        e.starts_with("GPU error:") && e.contains("invalid usage"),
        "{e}"
    );
    // Reported once; the device keeps working.
    ctx.check_errors().unwrap();
    let device = Device::Gpu(std::sync::Arc::new(ctx));
    let y = device
        .activation_forward(Activation::Relu, &[-1.0, 2.0], 2)
        .unwrap();
    assert_eq!(y, [0.0, 2.0]);
}

#[test]
fn pipelines_are_compiled_once_per_device_and_tile_shape() {
    let Some(gpu) = common::gpu() else { return };
    use kiln::gpu::kernels::MATMUL;
    use kiln::gpu::matmul_tiles::CANDIDATES;
    let consts = [("TRANS_A", 1.0), ("TRANS_B", 0.0)];
    let tiles = CANDIDATES[2].defines();
    let a = gpu.pipeline(&MATMUL, &consts, &tiles);
    let b = gpu.pipeline(&MATMUL, &consts, &tiles);
    let other_layout = gpu.pipeline(&MATMUL, &[("TRANS_A", 0.0), ("TRANS_B", 1.0)], &tiles);
    let other_tiles = gpu.pipeline(&MATMUL, &consts, &CANDIDATES[6].defines());
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(!std::sync::Arc::ptr_eq(&a, &other_layout));
    assert!(!std::sync::Arc::ptr_eq(&a, &other_tiles));
    gpu.check_errors().unwrap();
}
