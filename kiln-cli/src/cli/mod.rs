//! The `kiln` subcommands, one module each.

/// `println!` whose failure (stdout a closed pipe, a full disk) is an error to return rather
/// than a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
    }};
}

pub mod bench;
pub mod devices;
pub mod log;
pub mod plot;
pub mod schedule;
pub mod train;
pub mod tune;

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
    /// Print the learning rate of every update under a [schedule] table (and the momentum, where it cycles it).
    Schedule(ScheduleArgs),
    /// Plot the loss and learning rate of a `kiln train --log` file.
    Plot(PlotArgs),
    /// Time matmul, every optimizer's update, copy and training steps on the GPU and the CPU device.
    Bench(BenchArgs),
    /// Time every matmul tile shape on the GPU and cache the fastest for this adapter.
    Tune {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
}

#[derive(Args)]
pub struct BenchArgs {
    /// gpu, cpu, or both side by side (with the GPU/CPU ratio).
    #[arg(long, default_value = "both")]
    pub device: String,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Small sizes only (well under two minutes on a software adapter).
    #[arg(long)]
    pub quick: bool,
    /// Print {"results": [...]} instead of a table.
    #[arg(long)]
    pub json: bool,
    /// GPU kernels with wgpu's runtime checks (bounds checks and loop bounding): off (the
    /// default build), on, or both side by side.
    #[arg(long, default_value = "off")]
    pub bounds_checks: String,
    /// Training steps with each elementwise activation fused into the product before it
    /// (the default), run as kernels of their own, or both side by side (the separate rows
    /// are marked gpu+separate; only train_step, profile and epoch differ).
    #[arg(long, default_value = "fused")]
    pub activations: String,
    /// Comma-separated: matmul, optimizers, train_step (rows train_step, train_loop and
    /// resident_step), profile (the train_step cases' resident step kernel by kernel), epoch,
    /// copy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "copy,matmul,optimizers,train_step,profile,epoch"
    )]
    pub ops: Vec<String>,
}

#[derive(Args)]
pub struct PlotArgs {
    /// The JSON-lines file `kiln train --log` wrote.
    pub metrics: PathBuf,
    /// The image to write (.png or .svg).
    #[arg(short, long)]
    pub output: PathBuf,
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
            ..AdapterOptions::from_env()
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// A run file (TOML). Without one, the bundled digits classifier is trained.
    pub run: Option<PathBuf>,
    /// auto: a hardware GPU if there is one, else the CPU. gpu: any adapter, software too.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Start from these weights (safetensors, nn.Sequential layout).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Write the final weights here (safetensors, nn.Sequential layout).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Keep the weights of the best evaluation here (nn.Sequential layout), rewritten each
    /// time it improves: the best by early stopping's monitor, else by validation loss.
    #[arg(long)]
    pub save_best: Option<PathBuf>,
    /// Write one JSON line per update and per evaluation.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Write checkpoints into this directory.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every N updates (and always at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Continue the run checkpointed in this directory (further checkpoints go there too).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Total updates, overriding the run file.
    #[arg(long)]
    pub steps: Option<u64>,
    /// What a NaN or infinite loss does: stop the run, or skip that update.
    #[arg(long, value_enum, default_value = "stop")]
    pub on_nan: OnNan,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnNan {
    Stop,
    Skip,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleFormat {
    /// `step,lr` header (`epoch,lr` for a schedule stepped per epoch; `,momentum` added where
    /// the schedule cycles momentum), then one row per step.
    Csv,
    /// `{"lr": [...]}` (and `"momentum": [...]` where the schedule cycles it).
    Json,
}

#[derive(Args)]
pub struct ScheduleArgs {
    /// A TOML file with a [schedule] table (a run file works; lr defaults to [optimizer].lr).
    pub file: PathBuf,
    /// Updates to list (t = 0 .. N−1); epochs, for a schedule with interval = "epoch".
    #[arg(long)]
    pub steps: usize,
    /// For a schedule with interval = "epoch": list each update's rate, this many updates an
    /// epoch (`--steps` still counts epochs).
    #[arg(long)]
    pub batches_per_epoch: Option<usize>,
    /// One number per line, line t observed after update t (after epoch t with interval =
    /// "epoch"): the metric for reduce_on_plateau and the loss-driven kinds, the squared
    /// gradient norm for grad_norm_adaptive.
    #[arg(long)]
    pub observations: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ScheduleFormat,
    /// Also draw the curve (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}
