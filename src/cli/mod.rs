//! The `kiln` subcommands, one module each.

pub mod devices;
pub mod schedule;
pub mod train;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use kiln::{AdapterOptions, DeviceChoice};

#[derive(Subcommand)]
pub enum Command {
    /// List every GPU adapter with the limits and features Kiln uses.
    Devices {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Train the bundled digits classifier and report validation loss and accuracy.
    Train(TrainArgs),
    /// Print the learning rate of every update under a [schedule] table.
    Schedule(ScheduleArgs),
}

#[derive(Args, Clone)]
pub struct AdapterArgs {
    /// Graphics backend: vulkan, metal, dx12 or gl.
    #[arg(long, env = "KILN_BACKEND")]
    pub backend: Option<String>,
    /// Use the adapter whose name contains this (case-insensitive).
    #[arg(long, env = "KILN_ADAPTER")]
    pub adapter: Option<String>,
}

impl AdapterArgs {
    pub fn options(&self) -> AdapterOptions {
        AdapterOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// auto: a hardware GPU if there is one, else the CPU. gpu: any adapter, software too.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Optimizer updates.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Initial learning rate of the cosine schedule.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Seed of the weights, the split and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print nothing but the final result and errors.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleFormat {
    /// `step,lr` header, then one row per update.
    Csv,
    /// `{"lr": [...]}`.
    Json,
}

#[derive(Args)]
pub struct ScheduleArgs {
    /// A TOML file with a [schedule] table (a run file works; lr defaults to [optimizer].lr).
    pub file: PathBuf,
    /// Updates to list (t = 0 .. N−1).
    #[arg(long)]
    pub steps: usize,
    /// One number per line, line t observed after update t: the metric for reduce_on_plateau
    /// and the loss-driven kinds, the squared gradient norm for grad_norm_adaptive.
    #[arg(long)]
    pub observations: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ScheduleFormat,
    /// Also draw the curve (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}
