//! The `kiln` command line.

mod cli;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Neural-network training on any GPU through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> Result<()> {
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: first thing in main, before any thread exists. Mesa's device-select layer
        // only reorders adapters (Kiln chooses its own) and prints XDG_RUNTIME_DIR complaints
        // on machines without a desktop session.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    env_logger::init();
    match Cli::parse().command {
        cli::Command::Devices { adapter } => cli::devices::devices(&adapter.options()),
        cli::Command::Train(args) => cli::train::train(&args),
        cli::Command::Schedule(args) => cli::schedule::schedule(&args),
        cli::Command::Plot(args) => cli::plot::plot(&args),
        cli::Command::Bench(args) => cli::bench::bench(&args),
        cli::Command::Tune { adapter } => cli::tune::tune(&adapter),
    }
}
