#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bench;
pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
mod float_json;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod optim;
pub mod run;
mod timing;
pub mod train;
pub mod weights;

pub use device::{Device, DeviceChoice};
pub use error::{KilnError, Result};
pub use gpu::{AdapterOptions, GpuContext};
pub use kiln_schedule as schedule;
pub use model::{Layer, Sequential};
pub use ops::{Activation, Loss, MatmulDims, Targets, Transpose};
pub use optim::Optimizer;
pub use train::Trainer;
/// The wgpu version Kiln is built on, for code that uses [`GpuContext::device`] directly.
pub use wgpu;
