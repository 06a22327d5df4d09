//! Every shader in `shaders/` parses and validates with naga, so a WGSL error fails `cargo test`
//! on a machine without any GPU.

use std::path::Path;

#[test]
fn every_wgsl_file_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let mut source = std::fs::read_to_string(&path).unwrap();
        // A file that names a prelude is compiled behind it (src/gpu/kernels.rs does the same).
        if let Some(line) = source.lines().find(|l| l.starts_with("// prelude: ")) {
            let prelude = dir.join(line.trim_start_matches("// prelude: ").trim());
            source = std::fs::read_to_string(&prelude).unwrap() + &source;
        }
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected the five kernel families, found {checked} files"
    );
}

/// The Rust side names kernels by file and entry point; each must exist, or pipeline creation
/// would fail only at run time on a GPU.
#[test]
fn every_kernel_entry_point_the_engine_uses_exists() {
    for kernel in kiln::gpu::kernels::ALL {
        let module = naga::front::wgsl::parse_str(kernel.source).unwrap();
        assert!(
            module.entry_points.iter().any(|e| e.name == kernel.entry),
            "{}: no entry point {}",
            kernel.file,
            kernel.entry
        );
    }
}

/// The matmul is compiled once per tile shape from rewritten source: every candidate's and
/// experiment's source must rewrite each of its constants, keep the default shape's text
/// otherwise (or, unrolled, have the inner loop written out: one fma per k and vec4 of
/// outputs), and validate.
#[test]
fn every_matmul_tile_shape_compiles_from_rewritten_source() {
    use kiln::gpu::kernels::{MATMUL, with_defines};
    use kiln::gpu::matmul_tiles::{CANDIDATES, EXPERIMENTS};
    for tile in CANDIDATES.iter().chain(&EXPERIMENTS) {
        let source = with_defines(MATMUL.source, &tile.defines());
        for (name, value) in tile.defines() {
            let line = format!("const {name}: u32 = {value}u;");
            assert_eq!(source.matches(&line).count(), 1, "{tile}: {line}");
        }
        if tile.unroll {
            // The inner loop's lines replaced by one fma per output per k.
            let fmas = (tile.bk * tile.tm * tile.tn / 4) as usize;
            assert_eq!(source.matches("= fma(").count(), fmas, "{tile}");
            assert!(!source.contains("// inner loop: begin"), "{tile}");
            // Only the marked lines changed: the rest of the source is all there.
            let lines: Vec<&str> = MATMUL.source.lines().collect();
            let at = |m: &str| lines.iter().position(|l| l.trim() == m).unwrap();
            let (begin, end) = (at("// inner loop: begin"), at("// inner loop: end"));
            let body = kiln::gpu::kernels::unrolled_inner_loop(tile.bk, tile.tm, tile.tn);
            assert_eq!(
                source.lines().count(),
                lines.len() - (end - begin + 1) + body.lines().count(),
                "{tile}"
            );
            assert!(
                source.contains(lines[end + 1]),
                "{tile}: the line after the loop"
            );
        } else {
            assert_eq!(source.lines().count(), MATMUL.source.lines().count());
        }
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{tile}: {}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{tile}: {}", e.emit_to_string(&source)));
        let entry = &module.entry_points[0];
        assert_eq!(
            entry.workgroup_size,
            [tile.bn / tile.tn, tile.bm / tile.tm, 1],
            "{tile}"
        );
    }
}

/// Each optimizer kernel is `shaders/update.wgsl` followed by its file: the whole validates,
/// binds exactly the buffers the Rust side binds (group 0, bindings 0..n, the uniform last),
/// and its uniform block is as large as `UpdateUniform`, which the host writes into it.
#[test]
fn every_optimizer_kernel_validates_and_matches_the_host_layout() {
    use kiln::optim::UpdateUniform;
    let kernels = kiln::optim::kernels();
    assert!(kernels.len() >= 6, "one kernel per optimizer family");
    for kernel in kernels {
        let module = naga::front::wgsl::parse_str(kernel.source)
            .unwrap_or_else(|e| panic!("{}: {}", kernel.file, e.emit_to_string(kernel.source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.file, e.emit_to_string(kernel.source)));
        assert!(
            module.entry_points.iter().any(|e| e.name == kernel.entry),
            "{}: no entry point {}",
            kernel.file,
            kernel.entry
        );
        let mut bindings: Vec<(u32, naga::AddressSpace, u32)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| {
                let b = v.binding.as_ref()?;
                let size = module.types[v.ty].inner.size(module.to_ctx());
                Some((b.binding, v.space, size))
            })
            .collect();
        bindings.sort_by_key(|b| b.0);
        let indices: Vec<u32> = bindings.iter().map(|b| b.0).collect();
        let want: Vec<u32> = (0..kernel.bindings.len() as u32).collect();
        assert_eq!(indices, want, "{}: binding indices", kernel.file);
        let (_, space, size) = *bindings.last().unwrap();
        assert_eq!(space, naga::AddressSpace::Uniform, "{}", kernel.file);
        assert_eq!(
            size as usize,
            std::mem::size_of::<UpdateUniform>(),
            "{}: uniform block size",
            kernel.file
        );
    }
}
