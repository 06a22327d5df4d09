//! Run files: one TOML file describing a whole training run. Unknown keys and bad values are
//! errors naming the key.
//!
//! ```toml
//! [model]
//! layers = [{ dense = 32 }, "tanh", { dense = 32 }, "relu", { dense = 4 }]
//! loss = "cross_entropy"
//! [data]
//! source = "digits"          # or path = "x.safetensors" | "f.csv" | "mnist-dir/"
//! validation = 0.2
//! normalize = "standard"
//! [optimizer]
//! lr = 0.05
//! momentum = 0.9
//! [schedule]
//! kind = "cosine_annealing"
//! t_max = 1000
//! [train]
//! steps = 1000               # or epochs = 20
//! batch_size = 64
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::csv::{CsvOptions, Header};
use crate::error::{KilnError, Result};
use crate::model::{Layer, Sequential};
use crate::ops::{Activation, Loss};
use crate::optim::OptimizerConfig;
use crate::schedule::{Interval, Monitor, ScheduleConfig};

/// The run `kiln train` does without a run file: the digits classifier with warmup + cosine.
pub const DEFAULT_RUN: &str = r#"
[model]
layers = [{ dense = 64 }, "relu", { dense = 10 }]
loss = "cross_entropy"

[data]
source = "digits"
validation = 0.2
normalize = "standard"

[optimizer]
lr = 0.05
momentum = 0.9

[schedule]
kind = "warmup"
steps = 50
start_factor = 0.1
then = { kind = "cosine_annealing", t_max = 950 }

[train]
steps = 1000
batch_size = 64
"#;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// A parsed run file.
pub struct RunConfig {
    /// `[model]`.
    pub model: ModelConfig,
    /// `[data]`.
    pub data: DataConfig,
    #[serde(default)]
    /// `[optimizer]`: `kind` (torch.optim's name, default `"sgd"`), `lr`, `decay_biases` and
    /// the optimizer's arguments with PyTorch's names (see [`RunConfig::optimizer`]).
    pub optimizer: toml::Table,
    /// `[schedule]`, the learning-rate schedule table (a fixed rate when absent).
    pub schedule: Option<toml::Table>,
    #[serde(default)]
    /// `[train]`.
    pub train: TrainConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[model]`: the layers and the loss.
pub struct ModelConfig {
    /// `{ dense = N }`, an activation name, or `{ leaky_relu = slope }`.
    pub layers: Vec<toml::Value>,
    /// `mse`, `bce`, `bce_with_logits` or `cross_entropy`.
    pub loss: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[data]`: where the data comes from and how it is prepared.
pub struct DataConfig {
    /// A bundled dataset: digits, breast_cancer or diabetes.
    pub source: Option<String>,
    /// A data file (CSV, .safetensors) or an MNIST directory, relative to the run file.
    pub path: Option<PathBuf>,
    /// Held-out fraction.
    #[serde(default)]
    pub validation: f64,
    /// An explicit validation set, in any form `path` takes (an MNIST directory gives its
    /// `t10k-*` files); exclusive with `validation`. Relative to the run file.
    pub validation_path: Option<PathBuf>,
    #[serde(default)]
    /// Feature scaling.
    pub normalize: Normalize,
    #[serde(default = "yes")]
    /// Reshuffle the training rows every epoch (default true).
    pub shuffle: bool,
    #[serde(default)]
    /// Seed of the weights, the split and the data order.
    pub seed: u64,
    /// CSV: the target column (negative counts from the end).
    #[serde(default = "last_column")]
    pub label_column: i64,
    /// CSV: whether the first line is a header ("auto": a first line all text).
    #[serde(default)]
    pub header: HeaderConfig,
}

fn yes() -> bool {
    true
}
fn last_column() -> i64 {
    -1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
/// How features are scaled.
pub enum Normalize {
    #[default]
    /// As they are.
    None,
    /// Zero mean, unit variance per feature, with statistics of the training rows.
    Standard,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
/// Whether a CSV file's first line is a header: `"auto"` (default), `true`/`"yes"` or
/// `false`/`"no"`.
pub enum HeaderConfig {
    #[default]
    /// A header if no field of the first line is a number (see [`crate::data::csv::Header`]).
    Auto,
    /// The first line is a header.
    Yes,
    /// No header.
    No,
}

impl TryFrom<toml::Value> for HeaderConfig {
    type Error = String;
    fn try_from(v: toml::Value) -> std::result::Result<Self, String> {
        match &v {
            toml::Value::Boolean(true) => Ok(HeaderConfig::Yes),
            toml::Value::Boolean(false) => Ok(HeaderConfig::No),
            toml::Value::String(s) => match s.as_str() {
                "auto" => Ok(HeaderConfig::Auto),
                "yes" | "true" => Ok(HeaderConfig::Yes),
                "no" | "false" => Ok(HeaderConfig::No),
                _ => Err(format!("header: expected true, false or \"auto\", got {v}")),
            },
            _ => Err(format!("header: expected true, false or \"auto\", got {v}")),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[train]`: how long and in what batches.
pub struct TrainConfig {
    /// Total updates.
    pub steps: Option<u64>,
    /// Passes over the training rows (instead of steps).
    pub epochs: Option<u64>,
    /// Rows per update; a batch larger than the data set means full batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Clip gradients to this global L2 norm before each update.
    pub clip_grad_norm: Option<f32>,
    /// When to evaluate on the validation rows: `"epoch"` (default) or every N updates.
    #[serde(default)]
    pub eval_every: EvalEvery,
    /// Keras's EarlyStopping.
    pub early_stopping: Option<EarlyStoppingConfig>,
}

fn default_batch() -> usize {
    64
}

/// When evaluations run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum EvalEvery {
    /// After each epoch's last update.
    #[default]
    Epoch,
    /// After every N updates.
    Updates(u64),
}

impl TryFrom<toml::Value> for EvalEvery {
    type Error = String;
    fn try_from(v: toml::Value) -> std::result::Result<Self, String> {
        match &v {
            toml::Value::String(s) if s == "epoch" => Ok(EvalEvery::Epoch),
            toml::Value::Integer(n) if *n >= 1 => Ok(EvalEvery::Updates(*n as u64)),
            _ => Err(format!(
                "train.eval_every: expected \"epoch\" or a number of updates ≥ 1, got {v}"
            )),
        }
    }
}

/// Whether a larger or a smaller metric is better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// "max" for accuracy, "min" otherwise (Keras's "auto").
    #[default]
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// `[train] early_stopping = { … }`: Keras's `EarlyStopping` callback, its argument names and
/// defaults (`restore_best` is Keras's `restore_best_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    /// The metric watched: `val_loss` (default), `val_accuracy` or `train_loss`.
    #[serde(default = "val_loss")]
    pub monitor: Monitor,
    /// Checks without improvement tolerated before stopping (default 0).
    #[serde(default)]
    pub patience: u64,
    /// The least change that counts as an improvement (default 0).
    #[serde(default)]
    pub min_delta: f64,
    /// "auto" (default), "min" or "max".
    #[serde(default)]
    pub mode: StopMode,
    /// At the end of training, go back to the weights of the best check (default false).
    #[serde(default)]
    pub restore_best: bool,
}

fn val_loss() -> Monitor {
    Monitor::ValLoss
}

impl EarlyStoppingConfig {
    /// Whether smaller values of the monitor are better.
    pub fn minimizes(&self) -> bool {
        match self.mode {
            StopMode::Min => true,
            StopMode::Max => false,
            StopMode::Auto => self.monitor != Monitor::ValAccuracy,
        }
    }
}

impl Default for TrainConfig {
    /// The field defaults above (an absent `[train]` table).
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl RunConfig {
    /// Parses run-file text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| KilnError::file(source, e.to_string().trim_end()))
    }

    /// Reads and parses a run file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::weights::read_input_text(path)?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The bundled default run ([`DEFAULT_RUN`]).
    pub fn default_run() -> Self {
        Self::from_toml(DEFAULT_RUN, "the default run").expect("the default run parses")
    }

    /// The model for data with `features` inputs.
    pub fn model(&self, features: usize) -> Result<Sequential> {
        let layers = self
            .model
            .layers
            .iter()
            .enumerate()
            .map(|(i, v)| layer(i, v))
            .collect::<Result<Vec<_>>>()?;
        let loss = Loss::from_name(&self.model.loss)
            .map_err(|e| KilnError::invalid("model.loss", e.to_string()))?;
        Sequential::new(features, layers, loss)
    }

    /// The optimizer and its base rate, checked as torch.optim's constructor checks them.
    pub fn optimizer(&self) -> Result<OptimizerConfig> {
        OptimizerConfig::from_table(self.optimizer.clone())
    }

    /// The `[schedule]` table read (a fixed rate when absent).
    pub fn schedule(&self) -> Result<Option<ScheduleConfig>> {
        self.schedule
            .as_ref()
            .map(|t| ScheduleConfig::from_table(t.clone()).map_err(Into::into))
            .transpose()
    }

    /// The checks that tie `[schedule]`, `[train]` and `[data]` together: metrics measured
    /// per epoch need a per-epoch schedule, metrics on the validation rows need validation
    /// rows, early stopping watches an epoch's metric and its numbers are sane.
    pub fn check_monitors(&self) -> Result<()> {
        let has_validation = self.data.validation > 0.0 || self.data.validation_path.is_some();
        let needs_rows = |field: &str, m: Monitor| {
            if m.needs_validation() && !has_validation {
                Err(KilnError::invalid(
                    field,
                    format!(
                        "monitor \"{}\" needs validation rows: give [data] validation = FRACTION or validation_path",
                        m.name()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(schedule) = self.schedule()?
            && let Some(m) = schedule.watched()
        {
            needs_rows("schedule.monitor", m)?;
        }
        if let Some(max_norm) = self.train.clip_grad_norm
            && !(max_norm.is_finite() && max_norm > 0.0)
        {
            return Err(KilnError::invalid(
                "train.clip_grad_norm",
                format!("must be finite and > 0, got {max_norm}"),
            ));
        }
        if let Some(es) = &self.train.early_stopping {
            if es.monitor == Monitor::Loss {
                return Err(KilnError::invalid(
                    "train.early_stopping.monitor",
                    "early stopping watches an epoch's metric: val_loss, val_accuracy or train_loss",
                ));
            }
            needs_rows("train.early_stopping.monitor", es.monitor)?;
            // An explicit mode against the metric's direction would stop on improvements and
            // keep the worst weights.
            let rises = es.monitor == Monitor::ValAccuracy;
            match es.mode {
                StopMode::Min if rises => {
                    return Err(KilnError::invalid(
                        "train.early_stopping.mode",
                        "val_accuracy rises as the model improves: use mode = \"max\" (or \"auto\")",
                    ));
                }
                StopMode::Max if !rises => {
                    return Err(KilnError::invalid(
                        "train.early_stopping.mode",
                        format!(
                            "{} falls as the model improves: use mode = \"min\" (or \"auto\")",
                            es.monitor.name()
                        ),
                    ));
                }
                _ => {}
            }
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                return Err(KilnError::invalid(
                    "train.early_stopping.min_delta",
                    format!("must be finite and >= 0, got {}", es.min_delta),
                ));
            }
        }
        Ok(())
    }

    /// When the schedule steps.
    pub fn schedule_interval(&self) -> Result<Interval> {
        Ok(self.schedule()?.map_or(Interval::Update, |s| s.interval))
    }

    /// How to read a CSV data file.
    pub fn csv_options(&self) -> CsvOptions {
        CsvOptions {
            header: match self.data.header {
                HeaderConfig::Auto => Header::Auto,
                HeaderConfig::Yes => Header::Yes,
                HeaderConfig::No => Header::No,
            },
            label_column: self.data.label_column,
        }
    }

    /// Total updates, from `train.steps` or `train.epochs` with `batches_per_epoch`.
    pub fn total_steps(&self, batches_per_epoch: u64) -> Result<u64> {
        match (self.train.steps, self.train.epochs) {
            (Some(0), None) => Err(KilnError::invalid("train.steps", "must be at least 1")),
            (None, Some(0)) => Err(KilnError::invalid("train.epochs", "must be at least 1")),
            (Some(s), None) => Ok(s),
            (None, Some(e)) => e.checked_mul(batches_per_epoch).ok_or_else(|| {
                KilnError::invalid(
                    "train.epochs",
                    format!("{e} epochs of {batches_per_epoch} updates is more updates than can be counted"),
                )
            }),
            (None, None) => Err(KilnError::invalid("train", "give steps or epochs")),
            (Some(_), Some(_)) => Err(KilnError::invalid(
                "train",
                "give steps or epochs, not both",
            )),
        }
    }
}

fn layer(i: usize, v: &toml::Value) -> Result<Layer> {
    let field = format!("model.layers[{i}]");
    let bad = || {
        KilnError::invalid(
            &field,
            format!(
                "expected {{ dense = N }}, an activation name or {{ leaky_relu = slope }}, got {v}"
            ),
        )
    };
    match v {
        toml::Value::String(name) => Activation::from_name(name)
            .map(Layer::Activation)
            .map_err(|e| KilnError::invalid(&field, e.to_string())),
        toml::Value::Table(t) if t.len() == 1 => match t.iter().next().expect("one entry") {
            (k, toml::Value::Integer(n)) if k == "dense" && *n > 0 => {
                Ok(Layer::Dense { out: *n as usize })
            }
            (k, toml::Value::Integer(n)) if k == "dense" => Err(KilnError::invalid(
                &field,
                format!("dense width must be at least 1, got {n}"),
            )),
            (k, slope) if k == "leaky_relu" => slope
                .as_float()
                .or_else(|| slope.as_integer().map(|s| s as f64))
                .map(|s| Layer::Activation(Activation::LeakyRelu(s as f32)))
                .ok_or_else(bad),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match RunConfig::from_toml(text, "run.toml") {
            Ok(c) => match c.model(4).and_then(|_| c.optimizer()) {
                Ok(_) => panic!("expected an error:\n{text}"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    }

    const MINIMAL: &str =
        "[model]\nlayers = [{ dense = 3 }]\nloss = \"mse\"\n[data]\nsource = \"diabetes\"\n";

    #[test]
    fn the_default_run_parses_and_builds() {
        let c = RunConfig::default_run();
        let m = c.model(64).unwrap();
        assert_eq!(m.output(), 10);
        let o = c.optimizer().unwrap();
        assert_eq!((o.optimizer.name(), o.lr), ("sgd", 0.05));
        assert_eq!(c.total_steps(23).unwrap(), 1000);
    }

    #[test]
    fn pytorch_defaults_apply() {
        let c = RunConfig::from_toml(MINIMAL, "run.toml").unwrap();
        let o = c.optimizer().unwrap();
        assert_eq!((o.optimizer.name(), o.lr), ("sgd", 1e-3));
        assert_eq!(
            format!("{:?}", o.optimizer.rule()),
            format!("{:?}", crate::optim::Sgd::default())
        );
        assert!(c.data.shuffle);
        assert_eq!(c.data.validation, 0.0);
        assert_eq!(c.train.batch_size, 64);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = error(&format!("{MINIMAL}[train]\nstep = 10\n"));
        assert!(
            e.contains("run.toml") && e.contains("unknown field `step`"),
            "{e}"
        );
        let e = error(&MINIMAL.replace("loss = \"mse\"", "loss = \"mse\"\ndropout = 0.5"));
        assert!(e.contains("unknown field `dropout`"), "{e}");
        let e = error(&MINIMAL.replace("{ dense = 3 }", "{ dense = 0 }"));
        assert!(
            e.contains("model.layers[0]: dense width must be at least 1"),
            "{e}"
        );
        let e = error(&MINIMAL.replace("{ dense = 3 }", "{ dense = 3 }, \"swish\""));
        assert!(
            e.contains("model.layers[1]") && e.contains("unknown activation \"swish\""),
            "{e}"
        );
        let e = error(&MINIMAL.replace("\"mse\"", "\"hinge\""));
        assert!(e.contains("model.loss"), "{e}");
        let e = error(&format!("{MINIMAL}[optimizer]\nkind = \"lbfgs\"\n"));
        assert!(
            e.contains("optimizer.kind: unknown optimizer \"lbfgs\""),
            "{e}"
        );
        let e = error(&format!("{MINIMAL}[optimizer]\nnesterov = true\n"));
        assert!(e.contains("optimizer.nesterov"), "{e}");
        let e = error(&MINIMAL.replace(
            "source = \"diabetes\"",
            "source = \"diabetes\"\nnormalize = \"minmax\"",
        ));
        assert!(e.contains("normalize") && e.contains("minmax"), "{e}");
    }

    #[test]
    fn leaky_relu_takes_a_slope_and_integers_pass_for_floats() {
        let c = RunConfig::from_toml(
            &MINIMAL.replace(
                "{ dense = 3 }",
                "{ dense = 3 }, { leaky_relu = 0.2 }, { dense = 1 }",
            ),
            "r",
        )
        .unwrap();
        assert_eq!(
            c.model(4).unwrap().layers()[1],
            Layer::Activation(Activation::LeakyRelu(0.2))
        );
        let c = RunConfig::from_toml(&format!("{MINIMAL}[optimizer]\nlr = 1\n"), "r").unwrap();
        assert_eq!(c.optimizer().unwrap().lr, 1.0);
    }
}
