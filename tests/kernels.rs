//! Every kernel, GPU against its CPU twin, on random data whose shapes are not tile multiples.

mod common;

use common::{Tolerance, assert_close, gpu_device, random, random_labels};
use kiln::gpu::matmul_tiles::{CANDIDATES, EXPERIMENTS, TileConfig};
use kiln::{Activation, Device, Loss, MatmulDims, Targets, Transpose};

/// Sizes around the 64-wide matmul tile and the 16-deep k-step, and around 256-thread
/// workgroups for the elementwise kernels.
const SIZES: [usize; 7] = [1, 3, 17, 63, 64, 65, 129];

fn both() -> Option<Device> {
    gpu_device()
}

fn matmul_case(gpu: &Device, m: usize, n: usize, k: usize, t: Transpose, bias: bool, seed: u64) {
    let a = random(m * k, -1.0, 1.0, seed);
    let b = random(k * n, -1.0, 1.0, seed + 1);
    let bias = bias.then(|| random(n, -1.0, 1.0, seed + 2));
    let dims = MatmulDims { m, n, k };
    let want = Device::Cpu
        .matmul(&a, &b, bias.as_deref(), dims, t)
        .unwrap();
    let got = gpu.matmul(&a, &b, bias.as_deref(), dims, t).unwrap();
    assert_close(
        &format!("matmul {t:?} m={m} n={n} k={k}"),
        &got,
        &want,
        common::matmul_tolerance(k),
    );
}

#[test]
fn matmul_matches_cpu_on_every_size_combination() {
    let Some(gpu) = both() else { return };
    let mut seed = 0;
    for t in Transpose::ALL {
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    seed += 3;
                    matmul_case(&gpu, m, n, k, t, false, seed);
                }
            }
        }
    }
}

#[test]
fn matmul_matches_cpu_on_tall_thin_and_deep_shapes() {
    let Some(gpu) = both() else { return };
    for t in Transpose::ALL {
        for (i, &(m, n, k)) in [
            (4097, 3, 5),
            (2, 2000, 7),
            (5, 3, 3000),
            (300, 1, 1),
            (1, 1, 1000),
        ]
        .iter()
        .enumerate()
        {
            matmul_case(&gpu, m, n, k, t, i % 2 == 0, 1000 + i as u64);
        }
    }
}

/// Every tile shape the tuner may pick, and those kept to try on a GPU
/// ([`EXPERIMENTS`]: warps of 4×8 threads, 16 outputs a thread one way, the inner loop
/// unrolled by the host), with vec4 and
/// scalar loads, in all three layouts, on
/// shapes whose contiguous dimensions are and are not multiples of 4 (vec4 loads are used
/// only where they are) and that are not tile multiples. Every shape must give the values the
/// tuned one gives: each output is one fma chain over k in order.
#[test]
fn every_matmul_tile_shape_matches_cpu_and_the_others() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    let shapes = [
        (1, 1, 1),
        (4, 8, 12),
        (67, 131, 36),
        (132, 68, 17),
        (129, 65, 68),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let dims = MatmulDims { m, n, k };
        for t in Transpose::ALL {
            let seed = 3000 + 10 * i as u64;
            let a = random(m * k, -1.0, 1.0, seed);
            let b = random(k * n, -1.0, 1.0, seed + 1);
            let bias = random(n, -1.0, 1.0, seed + 2);
            let want = Device::Cpu.matmul(&a, &b, Some(&bias), dims, t).unwrap();
            let mut first: Option<(String, Vec<f32>)> = None;
            for tile in CANDIDATES
                .iter()
                .chain(&EXPERIMENTS)
                .flat_map(|&c| [c, c.scalar()])
            {
                if !tile.fits(ctx.limits()) {
                    continue;
                }
                let got = ctx
                    .matmul_with_tile(&a, &b, Some(&bias), dims, t, tile)
                    .unwrap();
                let what = format!("matmul {t:?} m={m} n={n} k={k} tiles {tile}");
                assert_close(&what, &got, &want, common::matmul_tolerance(k));
                match &first {
                    None => first = Some((what, got)),
                    Some((first_what, first_got)) => {
                        // Equal as numbers: a zero's sign may differ with the k padding.
                        assert!(
                            got.iter().zip(first_got).all(|(x, y)| x == y),
                            "{what} differs from {first_what}"
                        );
                    }
                }
            }
        }
    }
}

/// What split-k computes, on the host: each run of k (`split_chunks`) a chain of
/// multiply-adds in k order (`fused`: each rounded once, as `f32::mul_add`; else the product
/// rounded first), the runs' sums added in order, then the bias.
fn split_k_on_host(
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    dims: MatmulDims,
    t: Transpose,
    tile: TileConfig,
    fused: bool,
) -> Vec<f32> {
    let MatmulDims { m, n, k } = dims;
    let a_at = |i: usize, p: usize| match t {
        Transpose::Tn => a[p * m + i],
        _ => a[i * k + p],
    };
    let b_at = |p: usize, j: usize| match t {
        Transpose::Nt => b[j * k + p],
        _ => b[p * n + j],
    };
    let (run, splits) = kiln::gpu::matmul_tiles::split_chunks(dims, tile);
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f32;
            for s in 0..splits {
                let mut chain = 0.0f32;
                for p in s * run..((s + 1) * run).min(k) {
                    chain = if fused {
                        a_at(i, p).mul_add(b_at(p, j), chain)
                    } else {
                        a_at(i, p) * b_at(p, j) + chain
                    };
                }
                sum = if s == 0 { chain } else { sum + chain };
            }
            c[i * n + j] = sum + bias[j];
        }
    }
    c
}

/// Split-k (each of several workgroups per tile of C takes a run of k, a second kernel adds
/// their partial products): on every layout, shapes that are not tile multiples and runs
/// that do not divide k, each split gives the host's sum of chains run by run to the bit,
/// the same values on every tile shape, and the CPU's product within the matmul tolerance. A
/// split of a k too short to split (one run) is the plain product, to the bit.
#[test]
fn split_k_products_add_their_runs_in_order() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    use kiln::gpu::matmul_tiles::split_chunks;
    let tiles = [
        CANDIDATES[0],
        CANDIDATES[5],
        CANDIDATES[12],
        CANDIDATES[6].scalar(),
    ];
    let shapes = [
        (67, 13, 300),
        (5, 129, 257),
        (64, 64, 640),
        (1, 1, 1000),
        (33, 9, 60),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let dims = MatmulDims { m, n, k };
        for t in Transpose::ALL {
            let seed = 9000 + 10 * i as u64;
            let a = random(m * k, -1.0, 1.0, seed);
            let b = random(k * n, -1.0, 1.0, seed + 1);
            let bias = random(n, -1.0, 1.0, seed + 2);
            let cpu = Device::Cpu.matmul(&a, &b, Some(&bias), dims, t).unwrap();
            let plain = ctx
                .matmul_with_tile(&a, &b, Some(&bias), dims, t, tiles[0])
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // The plain product is one chain over k; whether the adapter's fma rounds once
            // (NVIDIA) or after the product too (lavapipe) decides which chain.
            let host = |tile, fused| split_k_on_host(&a, &b, &bias, dims, t, tile, fused);
            let fused = match (0..2).find(|&f| bits(&plain) == bits(&host(tiles[0], f == 1))) {
                Some(f) => f == 1,
                None => panic!("matmul {t:?} m={m} n={n} k={k}: the plain product is no chain"),
            };
            for ways in [2, 3, 4, 16] {
                let host = host(tiles[0].split_k(ways), fused);
                for tile in tiles.iter().filter(|t| t.fits(ctx.limits())) {
                    let tile = tile.split_k(ways);
                    let what = format!("matmul {t:?} m={m} n={n} k={k} tiles {tile}");
                    let got = ctx
                        .matmul_with_tile(&a, &b, Some(&bias), dims, t, tile)
                        .unwrap();
                    assert_close(&what, &got, &cpu, common::matmul_tolerance(k));
                    assert_eq!(bits(&got), bits(&host), "{what}: against the host's sums");
                    if split_chunks(dims, tile).1 == 1 {
                        assert_eq!(bits(&got), bits(&plain), "{what}: one run");
                    }
                }
            }
        }
    }
}

#[test]
fn a_tile_shape_over_the_limits_is_refused() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    let huge = TileConfig::parse("256x256x64/4x4").unwrap();
    let dims = MatmulDims { m: 1, n: 1, k: 1 };
    let e = ctx
        .matmul_with_tile(&[1.0], &[1.0], None, dims, Transpose::Nn, huge)
        .unwrap_err()
        .to_string();
    assert!(e.contains("256x256x64/4x4") && e.contains("limits"), "{e}");
}

#[test]
fn matmul_fused_bias_matches_cpu() {
    let Some(gpu) = both() else { return };
    for (i, &n) in SIZES.iter().enumerate() {
        matmul_case(&gpu, 65, n, 17, Transpose::Nt, true, 2000 + i as u64);
    }
}

/// The bias gradient sums the same f32 values in the same order on both devices (each part of
/// `ROWS_PER_PART` rows, then the parts' sums), so they agree to the bit: across one part, a
/// part and one row, many parts, and widths that are not multiples of the workgroup.
#[test]
fn bias_grad_equals_cpu_to_the_bit() {
    let Some(gpu) = both() else { return };
    let part = kiln::cpu::bias::ROWS_PER_PART;
    let rows = SIZES
        .iter()
        .copied()
        .chain([part - 1, part, part + 1, 40 * part + 7]);
    for rows in rows {
        for &cols in &SIZES {
            let dy = random(rows * cols, -1.0, 1.0, (rows * 1000 + cols) as u64);
            let want = Device::Cpu.bias_grad(&dy, cols).unwrap();
            let got = gpu.bias_grad(&dy, cols).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "bias_grad {rows}x{cols}");
            // And the sums are the column sums, within f32 rounding of an f64 sum.
            for (c, &g) in got.iter().enumerate() {
                let exact: f64 = (0..rows).map(|r| dy[r * cols + c] as f64).sum();
                let bound = 1e-6 * (rows as f64) * (1.0 + exact.abs());
                assert!(
                    (g as f64 - exact).abs() <= bound,
                    "bias_grad {rows}x{cols}, column {c}"
                );
            }
        }
    }
}

#[test]
fn activations_match_cpu_forward_and_backward() {
    let Some(gpu) = both() else { return };
    let mut acts = Activation::ALL.to_vec();
    acts.push(Activation::LeakyRelu(0.2));
    for act in acts {
        for &rows in &[1usize, 3, 65] {
            for &cols in &[1usize, 3, 17, 129] {
                let len = rows * cols;
                let seed = (rows * 131 + cols) as u64;
                // Include large magnitudes so saturation paths (tanh, sigmoid, softmax) run.
                let mut x = random(len, -4.0, 4.0, seed);
                if len > 2 {
                    x[0] = 30.0;
                    x[1] = -30.0;
                }
                let dy = random(len, -1.0, 1.0, seed + 7);
                let what = format!("{} [{rows}, {cols}]", act.name());
                let y_cpu = Device::Cpu.activation_forward(act, &x, cols).unwrap();
                let y_gpu = gpu.activation_forward(act, &x, cols).unwrap();
                assert_close(
                    &format!("{what} forward"),
                    &y_gpu,
                    &y_cpu,
                    common::ACTIVATION,
                );
                let dx_cpu = Device::Cpu
                    .activation_backward(act, &x, &y_cpu, &dy, cols)
                    .unwrap();
                let dx_gpu = gpu.activation_backward(act, &x, &y_cpu, &dy, cols).unwrap();
                assert_close(
                    &format!("{what} backward"),
                    &dx_gpu,
                    &dx_cpu,
                    common::ACTIVATION,
                );
            }
        }
    }
}

#[test]
fn activation_over_many_workgroups_matches_cpu() {
    // 70 000 elements: more than one 256-thread workgroup row, exercising the flat index.
    let Some(gpu) = both() else { return };
    let x = random(70_000, -3.0, 3.0, 99);
    let want = Device::Cpu
        .activation_forward(Activation::Relu, &x, 7)
        .unwrap();
    let got = gpu.activation_forward(Activation::Relu, &x, 7).unwrap();
    assert_close("relu 70000", &got, &want, common::ACTIVATION);
}

#[test]
fn losses_match_cpu() {
    let Some(gpu) = both() else { return };
    for loss in Loss::ALL {
        for &rows in &[1usize, 3, 17, 65, 300] {
            for &cols in &[1usize, 3, 10] {
                let n = rows * cols;
                let seed = (rows * 17 + cols) as u64;
                let what = format!("{} [{rows}, {cols}]", loss.name());
                let (output, targets_v, labels);
                match loss {
                    Loss::Bce => {
                        output = random(n, 0.001, 0.999, seed);
                        targets_v = random(n, 0.0, 1.0, seed + 1);
                    }
                    Loss::BceWithLogits => {
                        output = random(n, -3.0, 3.0, seed);
                        targets_v = random(n, 0.0, 1.0, seed + 1);
                    }
                    _ => {
                        output = random(n, -3.0, 3.0, seed);
                        targets_v = random(n, -1.0, 1.0, seed + 1);
                    }
                }
                labels = random_labels(rows, cols as u32, seed + 2);
                let targets = if loss == Loss::CrossEntropy {
                    Targets::Classes(&labels)
                } else {
                    Targets::Values(&targets_v)
                };
                let (l_cpu, g_cpu) = Device::Cpu.loss(loss, &output, targets, cols).unwrap();
                let (l_gpu, g_gpu) = gpu.loss(loss, &output, targets, cols).unwrap();
                assert_close(&format!("{what} value"), &[l_gpu], &[l_cpu], common::LOSS);
                assert_close(&format!("{what} grad"), &g_gpu, &g_cpu, common::LOSS);
            }
        }
    }
}

#[test]
fn grad_norm_and_clip_match_cpu() {
    let Some(gpu) = both() else { return };
    // Around one workgroup, the 4-per-thread share, and past the 256-partial cap.
    for (i, &n) in [1usize, 3, 255, 256, 1025, 65_537, 300_001]
        .iter()
        .enumerate()
    {
        let g = random(n, -1.0, 1.0, 500 + i as u64);
        let want = Device::Cpu.grad_norm_sq(&g).unwrap();
        let got = gpu.grad_norm_sq(&g).unwrap();
        assert_close(&format!("‖g‖² n={n}"), &[got], &[want], common::NORM);
        let max_norm = want.sqrt() * 0.5;
        let (mut g_cpu, mut g_gpu) = (g.clone(), g);
        let n_cpu = Device::Cpu.clip_grad_norm(&mut g_cpu, max_norm).unwrap();
        let n_gpu = gpu.clip_grad_norm(&mut g_gpu, max_norm).unwrap();
        assert_close(&format!("‖g‖ n={n}"), &[n_gpu], &[n_cpu], common::NORM);
        assert_close(&format!("clipped n={n}"), &g_gpu, &g_cpu, common::NORM);
    }
}

/// The forward product with its activation fused into the epilogue (as a training step runs a
/// dense layer and the activation after it): C equals the plain product with bias, and Y equals
/// the separate activation kernel applied to that C, to the bit, for every elementwise
/// activation, on every tile shape and on shapes that are not tile multiples. Against the CPU
/// within the matmul's and the activation's tolerances.
#[test]
fn matmul_with_fused_activation_matches_the_separate_kernels() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    let gpu = Device::Gpu(ctx.clone());
    let (acts, tiles) = fusable_activations_and_tiles(&ctx);
    for (i, &(m, n, k)) in [(65, 17, 33), (3, 129, 7), (64, 64, 16), (9, 70, 300)]
        .iter()
        .enumerate()
    {
        let dims = MatmulDims { m, n, k };
        let seed = 7000 + 10 * i as u64;
        // Scaled so that pre-activations spread over the activations' interesting range.
        let a = random(m * k, -2.0, 2.0, seed);
        let b = random(k * n, -1.0, 1.0, seed + 1);
        let bias = random(n, -1.0, 1.0, seed + 2);
        let cpu_c = Device::Cpu
            .matmul(&a, &b, Some(&bias), dims, Transpose::Nt)
            .unwrap();
        for &act in &acts {
            let cpu_y = Device::Cpu.activation_forward(act, &cpu_c, n).unwrap();
            // Every activation on the tuned tile shape, every tile shape on one activation:
            // each pair is a pipeline to compile, slow on a software adapter.
            for tile in tiles_for(&tiles, act) {
                let what = format!("{} m={m} n={n} k={k} tiles {tile:?}", act.name());
                let (c, y) = ctx
                    .matmul_activation(&a, &b, Some(&bias), dims, Transpose::Nt, act, *tile)
                    .unwrap();
                let separate_c = match tile {
                    Some(t) => ctx
                        .matmul_with_tile(&a, &b, Some(&bias), dims, Transpose::Nt, *t)
                        .unwrap(),
                    None => gpu
                        .matmul(&a, &b, Some(&bias), dims, Transpose::Nt)
                        .unwrap(),
                };
                let separate_y = gpu.activation_forward(act, &separate_c, n).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c), bits(&separate_c), "{what}: pre-activation");
                assert_eq!(bits(&y), bits(&separate_y), "{what}: activation");
                assert_close(&what, &c, &cpu_c, common::matmul_tolerance(k));
                // C's error carries through the activation (slope at most ~1.13, GELU's), plus
                // the activation's own.
                let through = Tolerance {
                    abs: 1.2 * common::matmul_tolerance(k).abs + common::ACTIVATION.abs,
                    rel: 1.2 * common::matmul_tolerance(k).rel + common::ACTIVATION.rel,
                };
                assert_close(&what, &y, &cpu_y, through);
            }
        }
    }
    // Softmax needs whole rows: not fused, and asking is an error.
    let e = ctx
        .matmul_activation(
            &[1.0],
            &[1.0],
            None,
            MatmulDims { m: 1, n: 1, k: 1 },
            Transpose::Nn,
            Activation::Softmax,
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("softmax"), "{e}");
}

/// The backward product dX = dY·W with the activation before the layer folded into its
/// epilogue (as a training step runs them): equal to the bit to the plain product followed by
/// the separate backward kernel, for every elementwise activation and tile shape, and within
/// tolerance of the CPU.
#[test]
fn matmul_with_fused_activation_gradient_matches_the_separate_kernels() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    let gpu = Device::Gpu(ctx.clone());
    let (acts, tiles) = fusable_activations_and_tiles(&ctx);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (i, &(m, n, k)) in [(65, 17, 33), (3, 129, 7), (64, 64, 16), (9, 70, 300)]
        .iter()
        .enumerate()
    {
        let dims = MatmulDims { m, n, k };
        let seed = 8000 + 10 * i as u64;
        let dy = random(m * k, -1.0, 1.0, seed);
        let w = random(k * n, -1.0, 1.0, seed + 1);
        // The activation's input (pre-activation) and output over the dX shape.
        let x = random(m * n, -3.0, 3.0, seed + 2);
        for &act in &acts {
            let y = Device::Cpu.activation_forward(act, &x, n).unwrap();
            let v = if matches!(act, Activation::Sigmoid | Activation::Tanh) {
                &y
            } else {
                &x
            };
            let cpu_dx = Device::Cpu
                .matmul(&dy, &w, None, dims, Transpose::Nn)
                .unwrap();
            let cpu = Device::Cpu
                .activation_backward(act, &x, &y, &cpu_dx, n)
                .unwrap();
            for tile in tiles_for(&tiles, act) {
                let what = format!("{} grad m={m} n={n} k={k} tiles {tile:?}", act.name());
                let got = ctx
                    .matmul_activation_grad(&dy, &w, v, dims, Transpose::Nn, act, *tile)
                    .unwrap();
                let plain = match tile {
                    Some(t) => ctx
                        .matmul_with_tile(&dy, &w, None, dims, Transpose::Nn, *t)
                        .unwrap(),
                    None => gpu.matmul(&dy, &w, None, dims, Transpose::Nn).unwrap(),
                };
                let separate = gpu.activation_backward(act, &x, &y, &plain, n).unwrap();
                assert_eq!(bits(&got), bits(&separate), "{what}");
                // dX's error times act' (at most ~1.13, GELU's), plus the activation's own.
                let through = Tolerance {
                    abs: 1.2 * common::matmul_tolerance(k).abs + common::ACTIVATION.abs,
                    rel: 1.2 * common::matmul_tolerance(k).rel + common::ACTIVATION.rel,
                };
                assert_close(&what, &got, &cpu, through);
            }
        }
    }
}

/// Every activation a product can fuse (leaky_relu at two slopes), and the tile shapes that
/// fit `ctx` (`None`: the tuned one first), one of them splitting k.
fn fusable_activations_and_tiles(
    ctx: &kiln::GpuContext,
) -> (Vec<Activation>, Vec<Option<TileConfig>>) {
    let mut acts: Vec<Activation> = Activation::ALL
        .into_iter()
        .filter(|&a| a != Activation::Softmax)
        .collect();
    acts.push(Activation::LeakyRelu(0.2));
    // And split-k, whose epilogue runs in the kernel that adds the partial products (where
    // k is long enough to split).
    let tiles = std::iter::once(None)
        .chain(
            CANDIDATES
                .iter()
                .chain(&[CANDIDATES[6].split_k(4)])
                .filter(|t| t.fits(ctx.limits()))
                .map(|&t| Some(t)),
        )
        .collect();
    (acts, tiles)
}

/// The tile shapes a fused-epilogue test runs `act` on: all of them for GELU (the longest
/// epilogue), the tuned one (`None`) for the others.
fn tiles_for(tiles: &[Option<TileConfig>], act: Activation) -> &[Option<TileConfig>] {
    if act == Activation::Gelu {
        tiles
    } else {
        &tiles[..1]
    }
}

/// The bandwidth yardstick copies every element, whole vec4s (lengths that are multiples of 4)
/// and single floats alike, across many workgroups.
#[test]
fn copy_moves_every_element() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    for len in [0usize, 1, 3, 4, 257, 1024, 1027, 70_000] {
        let x = random(len, -1.0, 1.0, len as u64);
        assert_eq!(ctx.copy(&x).unwrap(), x, "{len} floats");
    }
}

/// A host batch checked and copied on several threads, each taking its own share of whole
/// runs (the last share and the tail shorter): every element arrives, whatever the number of
/// threads, and of several values that are not finite in different shares the first is named.
#[test]
fn writes_checked_on_several_threads_arrive_whole_and_name_the_first_bad_value() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    for len in [0usize, 5, 1024, 3 * 1024 + 17, 100_003] {
        let data: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
        let buffer = ctx.storage_buffer("batch", len.max(1)).unwrap();
        for threads in [1, 2, 3, 8] {
            ctx.fill(&buffer, len.max(1), 0.0).unwrap();
            ctx.write_finite_on(&buffer, &data, "x", threads).unwrap();
            assert!(
                ctx.read_back(&buffer, 0, len).unwrap() == data,
                "{len} floats on {threads} threads"
            );
            if len < 1024 {
                continue;
            }
            let mut bad = data.clone();
            // In the tail, in a late share and in an early one: the early one is named.
            bad[len - 1] = f32::NAN;
            bad[len * 3 / 4] = f32::INFINITY;
            bad[len / 3] = f32::NEG_INFINITY;
            let e = ctx
                .write_finite_on(&buffer, &bad, "x", threads)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("index {}", len / 3)) && e.contains("-inf"),
                "{len} floats on {threads} threads: {e}"
            );
        }
    }
    // A batch large enough to share out: the first writes alternate between one thread and
    // several while the context measures which is faster, then keep one; each arrives whole.
    let len = (2 * kiln::gpu::upload::BYTES_PER_THREAD / 4) + 1234;
    let buffer = ctx.storage_buffer("batch", len).unwrap();
    for i in 0..2 * kiln::gpu::upload::SAMPLES + 3 {
        let data: Vec<f32> = (0..len).map(|v| (v + i) as f32).collect();
        ctx.write_finite(&buffer, &data, "x").unwrap();
        assert!(ctx.read_back(&buffer, 0, len).unwrap() == data, "write {i}");
    }
}

/// Writes over one piece (`WRITE_PIECE`) go up in pieces, each pushed through before the next:
/// every element arrives, for data and for a fill alike.
#[test]
fn writes_larger_than_a_piece_arrive_whole() {
    let Some(Device::Gpu(ctx)) = both() else {
        return;
    };
    let len = kiln::gpu::WRITE_PIECE / 4 + 1001;
    let data: Vec<f32> = (0..len).map(|i| (i % 65_521) as f32).collect();
    let buffer = ctx.arena_buffer("large write", len).unwrap();
    ctx.write(&buffer, &data).unwrap();
    assert!(
        ctx.read_back(&buffer, 0, len).unwrap() == data,
        "written data"
    );
    ctx.fill(&buffer, len, 7.0).unwrap();
    let back = ctx.read_back(&buffer, 0, len).unwrap();
    assert!(back.iter().all(|&v| v == 7.0), "filled");
    // Checked as it is copied: every element arrives, and a value that is not finite in the
    // second piece is named by its index in the whole.
    let data: Vec<f32> = data.iter().map(|v| -v).collect();
    ctx.write_finite(&buffer, &data, "big").unwrap();
    assert!(
        ctx.read_back(&buffer, 0, len).unwrap() == data,
        "written and checked"
    );
    let mut bad = data;
    bad[len - 3] = f32::NAN;
    let e = ctx
        .write_finite(&buffer, &bad, "big")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big contains a non-finite value (NaN)")
            && e.contains(&format!("index {}", len - 3)),
        "{e}"
    );
}
