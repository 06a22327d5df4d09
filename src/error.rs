//! Kiln's error type. Every message names what was wrong: the tensor, the field, the limit.

use thiserror::Error;

/// [`KilnError::Diverged`]'s reason for a loss of training.
pub const TRAINING_DIVERGED: &str =
    "training diverged (a lower learning rate or gradient clipping may help)";

/// [`KilnError::Diverged`]'s reason for the loss on held-out rows.
pub const OUTPUTS_OVERFLOW: &str = "the model's outputs on these rows overflow: training \
     diverged, or the rows lie far outside the training rows' range (normalizing the data or \
     a lower learning rate may help)";

/// Everything that can go wrong in the library. Binaries wrap it in `anyhow`.
#[derive(Debug, Error)]
pub enum KilnError {
    /// No GPU adapter is usable on this machine.
    #[error(
        "no GPU adapter found{detail}. Install a Vulkan driver (on Debian/Ubuntu, \
         `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one) or use `--device cpu`"
    )]
    NoAdapter {
        /// What was tried, e.g. the backend asked for.
        detail: String,
    },

    /// `--adapter` / `KILN_ADAPTER` matched no adapter.
    #[error("no adapter matches {wanted:?}; adapters on this machine: {available}")]
    AdapterNotFound {
        /// The name substring asked for.
        wanted: String,
        /// The adapters there are.
        available: String,
    },

    /// An option had a value Kiln does not know.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The option, as a config key.
        field: String,
        /// Why the value is wrong.
        reason: String,
    },

    /// A tensor would not fit a device limit.
    #[error(
        "tensor `{tensor}` needs {size} bytes, over the device's {limit_name} of {limit} bytes"
    )]
    OverLimit {
        /// The tensor's name.
        tensor: String,
        /// Bytes it needs.
        size: u64,
        /// The wgpu limit it exceeds.
        limit_name: &'static str,
        /// That limit's value.
        limit: u64,
    },

    /// Two tensors, or a tensor and a model, disagree on a shape.
    #[error("shape mismatch in {context}: {detail}")]
    Shape {
        /// The operation or tensor.
        context: String,
        /// What does not fit.
        detail: String,
    },

    /// NaN or infinity where a finite number is required.
    #[error("{what} contains a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// The tensor.
        what: String,
        /// Index of the first non-finite element.
        index: usize,
        /// Its value.
        value: f32,
    },

    /// A loss (or gradient norm) that is not finite where a number is needed to go on: a
    /// schedule that follows it, an evaluation, an epoch's mean.
    #[error("{what} is {value}: {why}")]
    Diverged {
        /// Which number, and where in the run.
        what: String,
        /// Its value.
        value: f64,
        /// What may have caused it, and what may help.
        why: &'static str,
    },

    /// A class label outside `0..classes`.
    #[error("label {label} at row {row} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The row.
        row: usize,
        /// The label.
        label: u32,
        /// Classes the model has.
        classes: usize,
    },

    /// A file could not be read, parsed or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, with a line or byte offset where there is one.
        reason: String,
    },

    /// A learning-rate schedule was invalid or could not continue.
    #[error(transparent)]
    Schedule(#[from] kiln_schedule::ScheduleError),

    /// The GPU reported a validation error, ran out of memory or was lost.
    #[error("GPU error: {0}")]
    Gpu(String),
}

/// `Result` with [`KilnError`].
pub type Result<T, E = KilnError> = std::result::Result<T, E>;

impl KilnError {
    /// A bad value of `field` (a config key such as `optimizer.betas`), and why.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        KilnError::InvalidValue {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A problem with the file at `path`.
    pub fn file(path: impl AsRef<std::path::Path>, reason: impl std::fmt::Display) -> Self {
        KilnError::File {
            path: path.as_ref().display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Tensors (or a tensor and a model) that do not fit in `context`.
    pub fn shape(context: impl Into<String>, detail: impl Into<String>) -> Self {
        KilnError::Shape {
            context: context.into(),
            detail: detail.into(),
        }
    }
}
