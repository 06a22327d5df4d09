//! The engine's test helpers (devices, tolerances), and the `kiln` binary run as a user would.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod engine;
#[allow(unused_imports)]
pub use engine::*;

/// The `kiln` binary with `args`, on a clean slate for the variables that would change its
/// behaviour (backtraces, a forced matmul tile shape), and with split-k off: tests compare
/// runs of separate processes bit for bit (see [`gpu_options`]).
pub fn kiln_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("KILN_MATMUL_TILES")
        .env("KILN_SPLIT_K", "0")
        .env("NODEVICE_SELECT", "1");
    cmd
}

/// Runs the `kiln` binary as a user would ([`kiln_command`]), with `env` set on top.
pub fn kiln(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = kiln_command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("kiln runs")
}
