//! Kiln: neural-network training on any GPU through wgpu, with hand-written WGSL kernels and a
//! plain-Rust CPU twin of every kernel.
//!
//! ```no_run
//! use kiln::{Device, DeviceChoice, AdapterOptions};
//! let (device, why) = Device::select(DeviceChoice::Auto, &AdapterOptions::from_env())?;
//! println!("{why}");
//! # Ok::<(), kiln::KilnError>(())
//! ```

pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod train;

pub use device::{Device, DeviceChoice};
pub use error::{KilnError, Result};
pub use gpu::{AdapterOptions, GpuContext};
pub use kiln_schedule as schedule;
pub use model::{Layer, Sequential};
pub use ops::{Activation, Loss, MatmulDims, SgdOptions, Targets, Transpose};
pub use train::Trainer;
