//! Where an update's time goes: [`Trainer::profile`](super::Trainer::profile) times one
//! update, launch by launch or whole.

use super::program::Instr;
use crate::gpu::matmul_tiles::TileConfig;

/// How [`Trainer::profile`](super::Trainer::profile) times the update it profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileMode {
    /// Each launch of the step on its own: on a GPU each instruction's dispatches in a compute
    /// pass of their own between two timestamp queries (the step normally runs as one pass,
    /// with a barrier between dependent dispatches either way), on the CPU device wall time
    /// around each kernel.
    Kernels,
    /// The whole update as it normally runs: on a GPU its one compute pass between two
    /// timestamps, on the CPU device wall time around the step. Against the sum of
    /// [`ProfileMode::Kernels`]' times it shows what launching and ordering cost.
    Update,
}

/// One timed part of an update.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// What ran: "gather batch" (a resident batch's rows), a launch of the step ("matmul
    /// 256x1024x784 nt + relu", "relu' 256x1024", "loss 256x10", "sgd update", …), or "whole
    /// update" ([`ProfileMode::Update`]).
    pub kernel: String,
    /// Seconds it took (GPU time from timestamps; wall time on the CPU device).
    pub seconds: f64,
    /// Floating-point operations, for a product.
    pub flops: Option<f64>,
    /// The tile shape a product ran with on a GPU.
    pub tile: Option<TileConfig>,
}

/// Name of the [`ProfileMode::Update`] entry.
pub(super) const WHOLE_UPDATE: &str = "whole update";
/// Name of the entry timing the gather of a resident batch.
pub(super) const GATHER: &str = "gather batch";

impl KernelTime {
    pub(super) fn new(kernel: impl Into<String>, seconds: f64) -> KernelTime {
        KernelTime {
            kernel: kernel.into(),
            seconds,
            flops: None,
            tile: None,
        }
    }

    /// The entry of a launch of the step at `batch` rows, named as [`Instr::name`] names it.
    pub(super) fn of(
        instr: &Instr,
        batch: usize,
        optimizer: &str,
        tile: Option<TileConfig>,
        seconds: f64,
    ) -> KernelTime {
        KernelTime {
            kernel: instr.name(batch, optimizer),
            seconds,
            flops: instr.flops(batch),
            tile,
        }
    }
}
