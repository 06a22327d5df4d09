//! `kiln tune` and `kiln devices` on the GPU: the matmul tile cache, and errors naming
//! KILN_MATMUL_TILES.

mod common;

use common::kiln;

/// `kiln tune` times every tile shape that fits, marks one choice per timed class, and caches
/// the choice where KILN_CACHE_DIR says; a bad KILN_MATMUL_TILES is an error naming it.
#[test]
fn tune_times_every_tile_shape_and_caches_the_choice() {
    let Some(ctx) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("kiln-tune-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.to_str().unwrap();
    let out = kiln(&["tune"], &[("KILN_CACHE_DIR", cache)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fitting = kiln::gpu::matmul_tiles::CANDIDATES
        .iter()
        .filter(|c| c.fits(ctx.limits()))
        .count();
    for class in ["tiny", "small", "medium", "large"] {
        let timed = text
            .lines()
            .filter(|l| l.starts_with(class) && !l.contains("not timed"))
            .count();
        let chosen = text
            .lines()
            .filter(|l| l.starts_with(class) && l.ends_with("<- chosen"))
            .count();
        // Each class is timed on every fitting shape, vec4 and scalar, or not at all.
        assert!(timed == 2 * fitting || timed == 0, "{class}: {text}");
        assert_eq!(chosen, (timed > 0) as usize, "{class}: {text}");
    }
    let file = std::fs::read_to_string(dir.join("matmul-tiles.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let entry = v["adapters"].as_object().unwrap().values().next().unwrap();
    assert_eq!(entry["source"], "measured", "{file}");
    // `kiln devices` shows the cached choice for the adapter tuned, and says when there is none.
    let devices = kiln(&["devices"], &[("KILN_CACHE_DIR", cache)]);
    let listing = String::from_utf8_lossy(&devices.stdout);
    let tiny: kiln::gpu::matmul_tiles::TileConfig =
        serde_json::from_value(entry["tiny"].clone()).unwrap();
    let shown = format!("matmul tiles tiny {tiny}, small ");
    assert!(
        listing.contains(&shown) && listing.contains("(measured, cached)"),
        "{listing}"
    );
    let empty = dir.join("empty");
    let devices = kiln(&["devices"], &[("KILN_CACHE_DIR", empty.to_str().unwrap())]);
    let listing = String::from_utf8_lossy(&devices.stdout);
    assert!(!listing.contains("(measured, cached)"), "{listing}");
    assert!(
        listing.contains("matmul tiles not measured yet"),
        "{listing}"
    );
    // lavapipe's loop cap is listed where it applies, and only there.
    assert_eq!(
        listing.contains("loop cap     65535 iterations per shader thread"),
        listing.contains("llvmpipe"),
        "{listing}"
    );

    let out = kiln(
        &["bench", "--device", "gpu", "--ops", "matmul", "--quick"],
        &[
            ("KILN_CACHE_DIR", cache),
            ("KILN_MATMUL_TILES", "64x64x6/4x4"),
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("KILN_MATMUL_TILES") && e.contains("multiple of 4"),
        "{e}"
    );
    // `--adapter` picks the adapters listed; one that matches none is an error naming them.
    let name = ctx.name();
    let word = name.split_whitespace().next().unwrap();
    let devices = kiln(
        &["devices", "--adapter", word],
        &[("KILN_CACHE_DIR", cache)],
    );
    let listing = String::from_utf8_lossy(&devices.stdout);
    assert!(
        devices.status.success() && listing.contains(word),
        "{listing}"
    );
    let devices = kiln(&["devices", "--adapter", "no such adapter"], &[]);
    let e = String::from_utf8_lossy(&devices.stderr);
    assert!(
        !devices.status.success() && e.contains("no adapter matches \"no such adapter\""),
        "{e}"
    );
    // A cache that cannot be written: the timings are shown, and the command fails saying why.
    let blocked = dir.join("blocked");
    std::fs::write(&blocked, "a file where the cache folder would be").unwrap();
    let out = kiln(&["tune"], &[("KILN_CACHE_DIR", blocked.to_str().unwrap())]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("not cached") && e.contains("blocked"),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<- chosen"));
    std::fs::remove_dir_all(&dir).unwrap();
}
