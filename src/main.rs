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
    env_logger::init();
    match Cli::parse().command {
        cli::Command::Devices { adapter } => cli::devices::devices(&adapter.options()),
        cli::Command::Train(args) => cli::train::train(&args),
        cli::Command::Schedule(args) => cli::schedule::schedule(&args),
    }
}
