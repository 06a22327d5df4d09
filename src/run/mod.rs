//! A training run from a run file: data loaded, split and normalised; the model built (or its
//! weights loaded); updates over batches in DataLoader order; evaluation on the held-out rows;
//! checkpoints that resume exactly.

pub mod checkpoint;
pub mod config;

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use config::{DEFAULT_RUN, EarlyStoppingConfig, EvalEvery, Normalize, RunConfig, StopMode};

use crate::data::{Dataset, FileKind, TargetData, mnist};
use crate::device::Device;
use crate::error::{KilnError, Result};
use crate::model::Sequential;
use crate::ops::{self, Loss};
use crate::optim::OptimizerConfig;
use crate::schedule::{Interval, Monitor, Observation};
use crate::train::{PARAM_ALIGN, TrainOptions, Trainer};
use crate::weights;

/// Per-feature (mean, standard deviation) used to standardise the inputs, if they were.
type Stats = Option<(Vec<f32>, Vec<f32>)>;

/// Everything a run derives from its run file before a trainer exists.
struct Prepared {
    optimizer: OptimizerConfig,
    train: Dataset,
    validation: Option<Dataset>,
    normalization: Stats,
    model: Sequential,
    batch: usize,
    batches_per_epoch: u64,
    total_steps: u64,
}

impl Prepared {
    /// Loads, splits and normalises the data, builds the model and sizes the run.
    fn new(config: &RunConfig, base_dir: &Path, steps: Option<u64>) -> Result<Self> {
        let optimizer = config.optimizer()?;
        config.check_monitors()?;
        let fraction = config.data.validation;
        if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
            return Err(KilnError::invalid(
                "data.validation",
                format!("the held-out fraction must be in [0, 1), got {fraction}"),
            ));
        }
        if fraction > 0.0 && config.data.validation_path.is_some() {
            return Err(KilnError::invalid(
                "data",
                "give validation (a held-out fraction) or validation_path (a file), not both",
            ));
        }
        for (field, path) in [
            ("data.path", &config.data.path),
            ("data.validation_path", &config.data.validation_path),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(KilnError::invalid(
                    field,
                    "is empty: give a file or directory",
                ));
            }
        }
        if config.data.source.is_some() == config.data.path.is_some() {
            return Err(KilnError::invalid(
                "data",
                "give either source (a bundled dataset) or path",
            ));
        }
        // The CSV options mean nothing to other data: given where no file is a CSV file,
        // they are a mistake.
        let csv_option = [
            ("data.label_column", config.data.label_column != -1),
            (
                "data.header",
                config.data.header != config::HeaderConfig::Auto,
            ),
        ]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field));
        let files: Vec<(&Path, FileKind)> = [&config.data.path, &config.data.validation_path]
            .into_iter()
            .flatten()
            .map(|p| (p.as_path(), FileKind::of(&base_dir.join(p))))
            .collect();
        if let Some(field) = csv_option
            && !files.iter().any(|(_, k)| *k == FileKind::Csv)
        {
            let what = match (&config.data.source, files.first()) {
                (Some(name), _) => format!("source {name:?} is a bundled dataset"),
                (None, Some((path, kind))) => format!("{} is {}", path.display(), kind.describe()),
                (None, None) => unreachable!("a source or a path is given"),
            };
            return Err(KilnError::invalid(
                field,
                format!("applies to CSV files, and {what}"),
            ));
        }
        let data = match (&config.data.source, &config.data.path) {
            (Some(name), _) => Dataset::bundled(name)?,
            (None, Some(path)) => Dataset::from_path(&base_dir.join(path), &config.csv_options())?,
            (None, None) => unreachable!("checked above"),
        };
        let (mut train, mut validation) = if let Some(path) = &config.data.validation_path {
            let path = base_dir.join(path);
            let v = Dataset::from_path_split(&path, &config.csv_options(), mnist::Split::Test)?;
            if v.features != data.features || v.targets != data.targets {
                return Err(KilnError::file(
                    &path,
                    format!(
                        "validation rows have {} features and {} target columns, the training rows {} and {}",
                        v.features, v.targets, data.features, data.targets
                    ),
                ));
            }
            (data, Some(v))
        } else if fraction > 0.0 {
            let (t, v) = data.split(fraction, config.data.seed)?;
            (t, Some(v))
        } else {
            (data, None)
        };
        // Rows are checked when loaded and not per update (`Trainer::step_loaded`); only
        // standardising changes them, and rows far from a nearly constant training feature
        // can overflow then.
        let normalization = if config.data.normalize == Normalize::Standard {
            let (mean, std) = train.feature_stats();
            train.standardize(&mean, &std)?;
            if let Some(v) = &mut validation {
                v.standardize(&mean, &std)?;
            }
            for (what, d) in std::iter::once(("training rows", &train))
                .chain(validation.as_ref().map(|v| ("validation rows", v)))
            {
                ops::check_finite(&format!("{}: {what} after normalize", d.source), &d.x)?;
            }
            Some((mean, std))
        } else {
            None
        };
        let model = config.model(train.features)?;
        if config.train.batch_size == 0 {
            return Err(KilnError::invalid("train.batch_size", "must be at least 1"));
        }
        let batch = config.train.batch_size.min(train.rows());
        let batches_per_epoch = train.rows().div_ceil(batch) as u64;
        let total_steps = match steps {
            Some(s) => s,
            None => config.total_steps(batches_per_epoch)?,
        };
        Ok(Prepared {
            optimizer,
            train,
            validation,
            normalization,
            model,
            batch,
            batches_per_epoch,
            total_steps,
        })
    }

    /// The run file's schedule as configured, for a checkpoint to hold a resume to: its kind
    /// with every parameter (defaults filled in), when it steps, what it watches, and the base
    /// rate if it uses one. The configuration, not the scheduler's own serialised state, so
    /// that a checkpoint of one version resumes under the next.
    fn schedule_record(&self, config: &RunConfig) -> Result<serde_json::Value> {
        let record = match config.schedule()? {
            None => serde_json::json!({ "kind": "fixed", "lr": self.optimizer.lr }),
            Some(s) => {
                let uses_base = s.kind.build()?.uses_base_lr();
                serde_json::json!({
                    "kind": s.kind,
                    "interval": s.interval,
                    "monitor": s.monitor,
                    "lr": uses_base.then(|| s.lr.unwrap_or(self.optimizer.lr)),
                })
            }
        };
        Ok(normalized_record(record))
    }

    /// The run's epoch layout, for a checkpoint to hold a resume to.
    fn setup(&self) -> RunSetup {
        RunSetup {
            train_rows: self.train.rows(),
            batch: self.batch,
            batches_per_epoch: self.batches_per_epoch,
        }
    }

    /// The run file's schedule, on `[optimizer].lr` unless it gives its own base rate;
    /// a fixed rate without one.
    fn scheduler(&self, config: &RunConfig) -> Result<crate::schedule::Scheduler> {
        Ok(match config.schedule()? {
            Some(s) => s.build(Some(self.optimizer.lr))?,
            None => crate::schedule::Scheduler::fixed(self.optimizer.lr)?,
        })
    }

    /// The schedule steps a run of `updates` updates makes before its last update: one per
    /// update, or per epoch.
    fn schedule_steps(&self, config: &RunConfig, updates: u64) -> Result<u64> {
        Ok(match config.schedule_interval()? {
            Interval::Update => updates.saturating_sub(1),
            Interval::Epoch => updates.div_ceil(self.batches_per_epoch).saturating_sub(1),
        })
    }

    /// The run file's schedule, new, if a replay of `steps` steps can stand for the run's: it
    /// follows no observations (a replay cannot know them), and the steps are not more than
    /// are worth replaying.
    fn replayable(
        &self,
        config: &RunConfig,
        steps: u64,
    ) -> Result<Option<crate::schedule::Scheduler>> {
        let s = self.scheduler(config)?;
        Ok((!s.needs().any() && steps <= MAX_REPLAYED).then_some(s))
    }

    /// The run file's schedule after `steps` steps, each with what a schedule that follows
    /// nothing is given; `None` for a schedule that follows observations (a replay cannot know
    /// them) or more steps than are worth replaying. `Err((step, why))`: step `step` failed.
    fn replayed(
        &self,
        config: &RunConfig,
        steps: u64,
    ) -> Result<Option<std::result::Result<crate::schedule::Scheduler, (u64, String)>>> {
        let Some(mut s) = self.replayable(config, steps)? else {
            return Ok(None);
        };
        for step in 0..steps {
            if let Err(e) = s.step(&Observation::default()) {
                return Ok(Some(Err((step, e.to_string()))));
            }
        }
        Ok(Some(Ok(s)))
    }

    /// The optimizer's scalar state (`step`, NAdam's `mu_product`, ASGD's `eta` and `mu`)
    /// after `updates` updates under the run file's schedule, where a replay can say (see
    /// [`Prepared::replayed`]); `None` otherwise. Skipped updates advance it alike.
    fn replayed_scalars(
        &self,
        config: &RunConfig,
        updates: u64,
    ) -> Result<Option<crate::optim::Scalars>> {
        let Some(mut s) = self.replayable(config, updates)? else {
            return Ok(None);
        };
        let mut optimizer = self.optimizer.optimizer.clone();
        if s.momentum().is_some() {
            optimizer = optimizer.cycling_momentum()?;
        }
        let per_update = config.schedule_interval()? == Interval::Update;
        let rule = optimizer.rule();
        let mut scalars = rule.initial_scalars();
        for u in 1..=updates {
            let hyper = crate::optim::Hyper {
                lr: s.lr(),
                momentum: s.momentum(),
            };
            if rule.scalars(hyper, &mut scalars).is_err() {
                return Ok(None);
            }
            let steps = per_update || u.is_multiple_of(self.batches_per_epoch);
            if u < updates && steps && s.step(&Observation::default()).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(scalars))
    }

    /// Errs unless the schedule has a rate for each of the run's updates:
    /// found at start-up, not at the update that would need it (a one_cycle shorter than the
    /// run). Schedules that follow observations are found out as they go.
    fn check_schedule_covers(&self, config: &RunConfig) -> Result<()> {
        let steps = self.schedule_steps(config, self.total_steps)?;
        if let Some(Err((step, why))) = self.replayed(config, steps)? {
            let unit = match config.schedule_interval()? {
                Interval::Update => "update",
                Interval::Epoch => "epoch",
            };
            return Err(KilnError::invalid(
                "schedule",
                format!(
                    "it has no rate for {unit} {} of the run's {} updates: {why}",
                    step + 1,
                    self.total_steps
                ),
            ));
        }
        Ok(())
    }

    fn options(&self, config: &RunConfig) -> Result<TrainOptions> {
        Ok(TrainOptions {
            schedule_interval: config.schedule_interval()?,
            optimizer: self.optimizer.optimizer.clone(),
            max_batch: self.batch,
            seed: config.data.seed,
            clip_grad_norm: config.train.clip_grad_norm,
        })
    }

    fn into_run(self, config: RunConfig, mut trainer: Trainer, state: RunState) -> Result<Run> {
        let outputs = self.model.output();
        let loss = self.model.loss();
        let train_targets = self.train.targets_for(loss, outputs)?;
        // On a GPU the training rows go to the device once, when they fit its bindings; each
        // step then gathers its batch there. Otherwise (and on the CPU device, where the rows
        // are in memory already) each step's batch is gathered on the host.
        // The validation rows follow them there (evaluations then predict on the device and
        // read the outputs back once), when they fit too.
        let rows = self.train.rows();
        let placement = match &trainer.device() {
            // Checked when read (`Dataset` and `targets_for`, and again after normalize).
            Device::Gpu(_) => {
                match trainer.load_loaded_data(&self.train.x, train_targets.as_targets()) {
                    Ok(()) => Placement::Device {
                        rows,
                        validation: place_validation(&mut trainer, self.validation.as_ref())?,
                    },
                    Err(e @ KilnError::OverLimit { .. }) => {
                        // Streamed: windows of whole batches, each gathered on the host, uploaded
                        // in one write and its batches gathered on the device. The window's room
                        // is held before the validation rows take theirs.
                        let window = (0..=STREAM_WINDOW_BATCHES.ilog2())
                            .rev()
                            .map(|p| ((1usize << p) * self.batch).min(rows))
                            .find_map(|w| Some((w, trainer.check_resident(w).ok()?)));
                        match window {
                            Some((window_rows, bytes)) => {
                                trainer.reserve_resident(bytes);
                                Placement::Streamed {
                                    window_rows,
                                    why: e.to_string(),
                                    validation: place_validation(
                                        &mut trainer,
                                        self.validation.as_ref(),
                                    )?,
                                }
                            }
                            None => Placement::Host { why: e.to_string() },
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Device::Cpu => Placement::Host {
                why: "the CPU device reads them where they are".into(),
            },
        };
        let validation = self
            .validation
            .map(|v| v.targets_for(loss, outputs).map(|t| (v, t)))
            .transpose()?;
        let tb = match train_targets {
            TargetData::Classes(_) => TargetData::Classes(Vec::new()),
            TargetData::Values(_) => TargetData::Values(Vec::new()),
        };
        let schedule = config.schedule()?;
        let epoch_monitor = schedule
            .as_ref()
            .filter(|s| s.interval == Interval::Epoch)
            .and_then(|s| s.watched());
        Ok(Run {
            placement,
            order_on_device: None,
            window: None,
            checkpoint_lock: None,
            eval_every: config.train.eval_every,
            early_stopping: config.train.early_stopping,
            epoch_monitor,
            state,
            model: self.model,
            trainer,
            train: self.train,
            train_targets,
            validation,
            normalization: self.normalization,
            batch: self.batch,
            batches_per_epoch: self.batches_per_epoch,
            total_steps: self.total_steps,
            order: Vec::new(),
            order_epoch: None,
            xb: Vec::new(),
            tb,
            config,
        })
    }
}

/// Loss (and accuracy, for classification) on the held-out rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the held-out rows.
    pub loss: f32,
    /// Fraction classified correctly (classification losses only).
    pub accuracy: Option<f64>,
}

/// Batches a streamed window holds at most.
const STREAM_WINDOW_BATCHES: usize = 64;

/// The most schedule steps a run replays to check its schedule (at start-up, and a resume's
/// saved schedule): a few million steps of host arithmetic, well under a second.
const MAX_REPLAYED: u64 = 1 << 22;

/// Puts the validation rows on the trainer's device when they fit beside what is there.
fn place_validation(
    trainer: &mut Trainer,
    validation: Option<&Dataset>,
) -> Result<ValidationPlacement> {
    let Some(v) = validation else {
        return Ok(ValidationPlacement::None);
    };
    match trainer.load_loaded_validation(&v.x) {
        Ok(()) => Ok(ValidationPlacement::Device { rows: v.rows() }),
        Err(e @ KilnError::OverLimit { .. }) => {
            Ok(ValidationPlacement::Host { why: e.to_string() })
        }
        Err(e) => Err(e),
    }
}

/// Where a run's training rows are while it trains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the device, uploaded once; each step gathers its batch there.
    Device {
        /// Rows uploaded.
        rows: usize,
        /// Where the validation rows are.
        validation: ValidationPlacement,
    },
    /// Too large for the device whole: streamed in windows of whole batches, each gathered
    /// on the host in the epoch's order and uploaded in one write over the last; each step
    /// gathers its batch from the window on the device.
    Streamed {
        /// Rows a window holds.
        window_rows: usize,
        /// Why the whole set is not on the device.
        why: String,
        /// Where the validation rows are.
        validation: ValidationPlacement,
    },
    /// On the host; each step's batch is gathered there and uploaded.
    Host {
        /// Why.
        why: String,
    },
}

impl Placement {
    /// Whether the validation rows are on the device (evaluations predict there).
    pub fn validation_on_device(&self) -> bool {
        matches!(
            self,
            Placement::Device {
                validation: ValidationPlacement::Device { .. },
                ..
            } | Placement::Streamed {
                validation: ValidationPlacement::Device { .. },
                ..
            }
        )
    }
}

/// "; … validation rows there too" and the like, after a placement's training rows.
impl std::fmt::Display for ValidationPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValidationPlacement::None => Ok(()),
            ValidationPlacement::Device { rows } => write!(f, "; {rows} validation rows there too"),
            ValidationPlacement::Host { why } => {
                write!(f, "; validation rows sent at each evaluation ({why})")
            }
        }
    }
}

/// Where a run's validation rows are, when its training rows are on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationPlacement {
    /// The run has no validation split.
    None,
    /// On the device, uploaded once; an evaluation predicts there and reads the outputs back.
    Device {
        /// Rows uploaded.
        rows: usize,
    },
    /// Sent from the host at each evaluation.
    Host {
        /// Why.
        why: String,
    },
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Device { rows, validation } => {
                write!(
                    f,
                    "data: {rows} training rows on the device, batches gathered there{validation}"
                )
            }
            Placement::Streamed {
                window_rows,
                why,
                validation,
            } => write!(
                f,
                "data: streamed to the device {window_rows} rows at a time, batches gathered \
                 there (not all at once: {why}){validation}"
            ),
            Placement::Host { why } => write!(f, "data: batches gathered on the host ({why})"),
        }
    }
}

/// What happened after an update besides the update itself (see [`Run::step`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    /// The rate the update used.
    pub lr: f64,
    /// An evaluation on the validation rows after this update (every `eval_every`, and at
    /// the end of each epoch whose schedule or early stopping watches a validation metric).
    pub evaluation: Option<Evaluation>,
    /// The epoch's mean batch loss, when this update ended an epoch and something watches it.
    pub train_loss: Option<f64>,
    /// Whether the metric that decides "best" improved here: early stopping's improvement
    /// (its monitor, mode and `min_delta`), else a validation loss below every earlier one.
    /// What `--save-best` saves on.
    pub improved: bool,
    /// Early stopping ended the run after this update.
    pub stopped: Option<EarlyStop>,
}

/// Why early stopping ended a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStop {
    /// Updates done when it stopped.
    pub step: u64,
    /// The epoch of the last update.
    pub epoch: u64,
    /// The watched metric's name.
    pub monitor: String,
    /// Its best value, and the update after which it was measured.
    pub best: f64,
    /// The update (count) after which the best value was measured.
    pub best_step: u64,
    /// Checks without improvement when it stopped.
    pub wait: u64,
}

impl EarlyStop {
    /// One line for people. Updates are numbered from 0, as the log's `step` numbers them.
    pub fn reason(&self) -> String {
        format!(
            "{} did not improve for {} checks (best {} after update {})",
            self.monitor,
            self.wait,
            self.best,
            self.best_step.saturating_sub(1)
        )
    }
}

/// The state of a run beyond its trainer's, kept in checkpoints: what per-epoch metrics,
/// early stopping and `--save-best` have seen so far.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Batch losses of the current epoch's updates made before the trainer's first step (a run
    /// resumed mid-epoch), for the epoch's `train_loss`.
    #[serde(with = "crate::float_json::f32s")]
    pub epoch_losses: Vec<f32>,
    /// Without early stopping: the lowest validation loss, and the update it was measured
    /// after.
    pub best: Option<(f64, u64)>,
    /// Early stopping: checks since the last improvement (Keras's `wait`).
    pub wait: u64,
    /// Early stopping's best value (with its `min_delta` rule) and its update.
    pub stop_best: Option<(f64, u64)>,
    /// Set when early stopping ended the run.
    pub stopped: Option<EarlyStop>,
    /// The run file's schedule as the run started it (`Prepared::schedule_record`): a resume
    /// must ask for the same. Absent from checkpoints of earlier versions.
    #[serde(default)]
    pub schedule: Option<serde_json::Value>,
    /// How the run's epochs are laid out (`Prepared::setup`): a resume must lay them out
    /// the same. Absent from checkpoints of earlier versions.
    #[serde(default)]
    pub setup: Option<RunSetup>,
    /// With `restore_best`: the parameters at early stopping's best check.
    #[serde(skip)]
    pub best_params: Option<Vec<f32>>,
}

/// A schedule record with its defaults spelled one way: `monitor = "loss"` (the default) and
/// no monitor are the same schedule, whichever a run file (or a checkpoint's record) has; a
/// `cyclic` or `one_cycle` with `cycle_momentum = false` is recorded without its momentum
/// keys, as checkpoints from before Kiln cycled momentum (which ran that way) recorded it.
fn normalized_record(mut record: serde_json::Value) -> serde_json::Value {
    let default = serde_json::to_value(kiln_schedule::Monitor::default()).ok();
    if let Some(m) = record.get_mut("monitor")
        && Some(&*m) == default.as_ref()
    {
        *m = serde_json::Value::Null;
    }
    drop_momentum(&mut record, false);
    one_cycle_total_steps(&mut record);
    record
}

/// Whether every value `saved` holds is `fresh`'s at the same place (keys `saved` lacks, or
/// holds as null, are not compared: a checkpoint of an earlier version lacks them). Floats
/// agree within [`same_float`].
fn json_within(saved: &serde_json::Value, fresh: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (saved, fresh) {
        (Value::Object(s), Value::Object(f)) => s
            .iter()
            .filter(|(_, v)| !v.is_null())
            .all(|(k, v)| f.get(k).is_some_and(|fv| json_within(v, fv))),
        (Value::Array(s), Value::Array(f)) => {
            s.len() == f.len() && s.iter().zip(f).all(|(a, b)| json_within(a, b))
        }
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            matches!((a.as_f64(), b.as_f64()), (Some(a), Some(b)) if same_float(a, b))
        }
        _ => saved == fresh,
    }
}

/// Two replays of one computation agree: equal, or within a relative 1e-9 where `cos`,
/// `powf` and the like round differently on another machine's maths library (a checkpoint
/// made on one and resumed on another). An edit is far larger.
fn same_float(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Spells every `one_cycle`'s length as `total_steps`, as its schedule counts it (PyTorch
/// takes `epochs`·`steps_per_epoch` where `total_steps` is not given): the two spellings of
/// one schedule are one schedule.
fn one_cycle_total_steps(v: &mut serde_json::Value) {
    for_each_table(v, &mut |map| {
        if map.get("kind").and_then(|k| k.as_str()) != Some("one_cycle") {
            return;
        }
        let count = |key: &str| map.get(key).and_then(serde_json::Value::as_u64);
        let total = count("total_steps")
            .or_else(|| count("epochs")?.checked_mul(count("steps_per_epoch")?));
        if let Some(total) = total {
            map.remove("epochs");
            map.remove("steps_per_epoch");
            map.insert("total_steps".into(), total.into());
        }
    });
}

/// Calls `f` on every table of a schedule record: each schedule's, its composites' children
/// included.
fn for_each_table(
    v: &mut serde_json::Value,
    f: &mut impl FnMut(&mut serde_json::Map<String, serde_json::Value>),
) {
    match v {
        serde_json::Value::Object(map) => {
            f(map);
            map.values_mut().for_each(|v| for_each_table(v, f));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| for_each_table(v, f)),
        _ => {}
    }
}

/// Removes the momentum keys of every schedule (composites' children too) that does not cycle
/// momentum, or with `all` of every schedule.
fn drop_momentum(v: &mut serde_json::Value, all: bool) {
    for_each_table(v, &mut |map| {
        if all || map.get("cycle_momentum") == Some(&serde_json::Value::Bool(false)) {
            for key in ["cycle_momentum", "base_momentum", "max_momentum"] {
                map.remove(key);
            }
        }
    });
}

/// What decides which rows each update of a run takes: a run resumed under another layout
/// would not continue where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSetup {
    /// Training rows.
    pub train_rows: usize,
    /// Rows per update.
    pub batch: usize,
    /// Updates per epoch.
    pub batches_per_epoch: u64,
}

/// A training run: see the module docs.
pub struct Run {
    /// The run file it came from.
    pub config: RunConfig,
    /// The model (read with [`Run::model`]: the run's data and trainer are made for it).
    model: Sequential,
    /// The trainer (parameters, optimizer, schedule, device).
    pub trainer: Trainer,
    train: Dataset,
    train_targets: TargetData,
    validation: Option<(Dataset, TargetData)>,
    /// Rows per update (the data set's size if the batch is larger).
    batch: usize,
    /// Batches in one pass over the training rows.
    batches_per_epoch: u64,
    /// Updates the run makes in all.
    total_steps: u64,
    /// Mean and standard deviation of each feature over the training rows, if standardised.
    normalization: Stats,
    /// The row order of `order_epoch`.
    order: Vec<usize>,
    order_epoch: Option<u64>,
    xb: Vec<f32>,
    tb: TargetData,
    eval_every: EvalEvery,
    early_stopping: Option<EarlyStoppingConfig>,
    placement: Placement,
    /// The epoch whose row order the device holds.
    order_on_device: Option<u64>,
    /// The streamed window on the device: its epoch and its batches' range in the epoch.
    window: Option<(u64, std::ops::Range<usize>)>,
    /// The metric a per-epoch schedule watches.
    epoch_monitor: Option<Monitor>,
    state: RunState,
    /// The checkpoint directory this run holds (see [`checkpoint::lock`]).
    checkpoint_lock: Option<checkpoint::DirLock>,
}

impl Run {
    /// Prepares a run: `base_dir` resolves the data path, `init` loads starting weights,
    /// `steps` overrides the run file's length.
    ///
    /// ```
    /// use std::path::Path;
    /// use kiln::Device;
    /// use kiln::run::{Run, RunConfig};
    /// let mut run = Run::new(RunConfig::default_run(), Path::new("."), &Device::Cpu, None, Some(30))?;
    /// while !run.finished() {
    ///     run.step()?;
    /// }
    /// let eval = run.evaluate()?.expect("the default run holds out a fifth of the digits");
    /// assert!(eval.accuracy.unwrap() > 0.5);
    /// # Ok::<(), kiln::KilnError>(())
    /// ```
    pub fn new(
        config: RunConfig,
        base_dir: &Path,
        device: &Device,
        init: Option<&Path>,
        steps: Option<u64>,
    ) -> Result<Run> {
        let p = Prepared::new(&config, base_dir, steps)?;
        crate::train::check_memory(device, &p.model, &p.options(&config)?)?;
        let layout = p.model.param_layout(PARAM_ALIGN);
        let params = match init {
            Some(path) => weights::load(path, &layout)?,
            None => p.model.init_params(&layout, config.data.seed)?,
        };
        p.check_schedule_covers(&config)?;
        let schedule = p.scheduler(&config)?;
        let trainer = Trainer::with_params(
            device,
            p.model.clone(),
            p.options(&config)?,
            schedule,
            params,
        )?;
        let state = RunState {
            schedule: Some(p.schedule_record(&config)?),
            setup: Some(p.setup()),
            ..RunState::default()
        };
        p.into_run(config, trainer, state)
    }

    /// Continues the run saved in the checkpoint directory `dir`.
    pub fn resume(
        config: RunConfig,
        base_dir: &Path,
        device: &Device,
        dir: &Path,
        steps: Option<u64>,
    ) -> Result<Run> {
        let p = Prepared::new(&config, base_dir, steps)?;
        crate::train::check_memory(device, &p.model, &p.options(&config)?)?;
        let (state, epoch, mut run_state) =
            checkpoint::load(dir, &p.model.param_layout(PARAM_ALIGN))?;
        // Errors in the checkpoint's state name its file.
        let file = checkpoint::path(dir);
        if run_state.wait > 1 << 53 {
            return Err(KilnError::file(
                &file,
                "run.wait is out of range (a damaged checkpoint?)",
            ));
        }
        // The checkpoint's schedule carries on, with its state; the run file's must be the
        // one it was made from (a checkpoint from before this check was kept has no record).
        let record = p.schedule_record(&config)?;
        if let Some(recorded) = &run_state.schedule
            && record != normalized_record(recorded.clone())
        {
            // A checkpoint made without momentum cycling (before Kiln cycled it, or with
            // cycle_momentum = false), under a run file that now cycles it.
            let mut rates_only = record;
            drop_momentum(&mut rates_only, true);
            let hint = if rates_only == normalized_record(recorded.clone()) {
                "; it was made without momentum cycling (by a Kiln from before cyclic and \
                 one_cycle cycled it as PyTorch does, or with cycle_momentum = false): add \
                 cycle_momentum = false to the schedule to resume it as it ran"
            } else {
                ""
            };
            return Err(KilnError::invalid(
                "schedule",
                format!(
                    "the run file's [schedule] (with its base rate, [optimizer].lr unless it \
                     gives lr) is not the one the checkpoint in {} was made with; a run cannot \
                     change its schedule when it resumes (to train on under another, start a \
                     new run from the saved weights with --init){hint}",
                    dir.display()
                ),
            ));
        }
        // The saved schedule's own state must be the run file's kind of schedule where a
        // trainer depends on it: whether it cycles momentum sizes the momentum buffers (an
        // edited checkpoint could drop or add the cycle that its record says).
        let cycles = p.scheduler(&config)?.cycles_momentum();
        let saved: crate::schedule::Scheduler = serde_json::from_value(state.schedule.clone())
            .map_err(|e| KilnError::file(&file, format!("its schedule: {e}")))?;
        if saved.cycles_momentum() != cycles {
            let why = if cycles {
                // Also a checkpoint older than the schedule records, before Kiln cycled it.
                "does not cycle momentum, the run file's does (made by a Kiln from before \
                 cyclic and one_cycle cycled it? add cycle_momentum = false to the schedule to \
                 resume it as it ran; else a damaged checkpoint)"
            } else {
                "cycles momentum, the run file's does not (a damaged checkpoint?)"
            };
            return Err(KilnError::file(&file, format!("its schedule {why}")));
        }
        // The epochs laid out as when the checkpoint was made: the same rows per update and
        // per epoch, so that the run takes the rows it would have taken.
        let setup = p.setup();
        if let Some(recorded) = &run_state.setup
            && *recorded != setup
        {
            return Err(KilnError::invalid(
                "train.batch_size",
                format!(
                    "the run makes {} updates of {} rows per epoch over {} training rows; the \
                     checkpoint in {} was made with {} of {} over {} (batch_size, the data or \
                     its validation split changed); a run cannot change them when it resumes \
                     (start a new run from the saved weights with --init)",
                    setup.batches_per_epoch,
                    setup.batch,
                    setup.train_rows,
                    dir.display(),
                    recorded.batches_per_epoch,
                    recorded.batch,
                    recorded.train_rows
                ),
            ));
        }
        // Checkpoints from before the layout was recorded may also lack the run's state (its
        // epoch losses): their counters are held to less.
        let recorded = run_state.setup.replace(setup).is_some();
        // The counters agree with each other and with the layout.
        let steps = state.steps;
        let in_epoch = steps % p.batches_per_epoch;
        let counters = if epoch != steps / p.batches_per_epoch {
            Some(format!(
                "epoch {epoch}, but update {steps} is in epoch {}{}",
                steps / p.batches_per_epoch,
                if recorded {
                    ""
                } else {
                    " (or batch_size or the data changed since it was made)"
                }
            ))
        } else if recorded && run_state.epoch_losses.len() as u64 != in_epoch {
            Some(format!(
                "{} losses of the current epoch, but {in_epoch} of its updates are done",
                run_state.epoch_losses.len()
            ))
        } else {
            None
        };
        if let Some(why) = counters {
            return Err(KilnError::file(
                &file,
                format!("{why} (a damaged checkpoint?)"),
            ));
        }
        // At the run's end is fine (a run that stopped before saving finishes and saves);
        // past it, the run asks for weights it cannot give.
        if steps > p.total_steps {
            return Err(KilnError::invalid(
                "train.steps",
                format!(
                    "the checkpoint in {} is at update {steps}, past the {} the run makes in \
                     all (ask for at least {steps} with train.steps, train.epochs or --steps)",
                    dir.display(),
                    p.total_steps
                ),
            ));
        }
        p.check_schedule_covers(&config)?;
        let options = p.options(&config)?;
        let saved_json = state.schedule.clone();
        let saved_scalars = state.optimizer.scalars.clone();
        let trainer = Trainer::resume(device, p.model.clone(), options, state)
            .map_err(|e| KilnError::file(&file, e))?;
        // The saved schedule must be the run file's after the steps it has taken, where a
        // replay can say (it follows no observations; and a checkpoint from before schedule
        // records carries its own on): an edited counter, bound or rate would otherwise carry
        // on silently. After the trainer's own checks, whose messages are more precise. A
        // step that failed (the run's end, for a schedule with no rate past it) leaves its
        // state part-way, the same in the replay. A one_cycle saved before the group kept its
        // bounds runs on its own (see `OneCycleLr`), which a replay today does not: not held.
        let bounds_kept =
            |v: &serde_json::Value| v["group"].get("max_lr").is_some_and(|m| !m.is_null());
        if run_state.schedule.is_some()
            && let Some(Ok(mut fresh)) = p.replayed(&config, saved.updates())?
            && (bounds_kept(&saved_json)
                || !serde_json::to_value(&fresh).is_ok_and(|f| bounds_kept(&f)))
        {
            // Keys a checkpoint of an earlier version lacks are not held against it.
            let same = |fresh: &crate::schedule::Scheduler| {
                serde_json::to_value(fresh).is_ok_and(|f| json_within(&saved_json, &f))
            };
            let matches =
                same(&fresh) || (fresh.step(&Observation::default()).is_err() && same(&fresh));
            if !matches {
                return Err(KilnError::file(
                    &file,
                    format!(
                        "its schedule is not the run file's after the {} steps it has taken \
                         (an edited counter, bound or rate: a damaged checkpoint?)",
                        saved.updates()
                    ),
                ));
            }
        }
        // Likewise the optimizer's scalar state (an edited `step` is caught above; an edited
        // `mu_product` or `eta` would carry on).
        let same_scalars = |want: &crate::optim::Scalars| {
            want.len() == saved_scalars.len()
                && want
                    .iter()
                    .all(|(k, w)| saved_scalars.get(k).is_some_and(|s| same_float(*s, *w)))
        };
        if run_state.schedule.is_some()
            && let Some(want) = p.replayed_scalars(&config, steps)?
            && !same_scalars(&want)
        {
            return Err(KilnError::file(
                &file,
                format!(
                    "its optimizer's scalar state {saved_scalars:?} is not what {steps} updates \
                     under the run file's schedule and [optimizer] leave, {want:?} (the \
                     [optimizer] settings changed since? else a damaged checkpoint)"
                ),
            ));
        }
        p.into_run(config, trainer, run_state)
    }

    /// The model.
    pub fn model(&self) -> &Sequential {
        &self.model
    }

    /// Rows per update (the data set's size if the batch is larger).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Batches in one pass over the training rows.
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    /// Updates the run makes in all.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Updates done.
    pub fn steps_done(&self) -> u64 {
        self.trainer.steps()
    }

    /// The epoch update `step` belongs to.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.batches_per_epoch
    }

    /// Whether every update has been made, or early stopping ended the run.
    pub fn finished(&self) -> bool {
        self.steps_done() >= self.total_steps || self.state.stopped.is_some()
    }

    /// Where the training rows are while the run trains.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Why early stopping ended the run, if it did.
    pub fn stopped(&self) -> Option<&EarlyStop> {
        self.state.stopped.as_ref()
    }

    /// The rows of `epoch` in the order its batches take them: shuffled from (seed, epoch) —
    /// so a resumed run draws the same order without saving generator state — or in file order.
    fn rows_of_epoch(&mut self, epoch: u64) -> &[usize] {
        if self.order_epoch != Some(epoch) {
            self.order = (0..self.train.rows()).collect();
            if self.config.data.shuffle {
                let seed = self.config.data.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                self.order
                    .shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            }
            self.order_epoch = Some(epoch);
        }
        &self.order
    }

    /// The training rows of update `t`: batch (t mod nb) of epoch ⌊t/nb⌋, a smaller last batch
    /// included, as PyTorch's DataLoader without drop_last.
    pub fn batch_rows(&mut self, t: u64) -> Vec<usize> {
        let (epoch, span) = self.batch_span(t);
        self.rows_of_epoch(epoch)[span].to_vec()
    }

    /// Update `t`'s epoch and the span of that epoch's order its batch takes.
    fn batch_span(&self, t: u64) -> (u64, std::ops::Range<usize>) {
        let start = (t % self.batches_per_epoch) as usize * self.batch;
        let end = (start + self.batch).min(self.train.rows());
        (t / self.batches_per_epoch, start..end)
    }

    /// Runs the next update (see [`Run::batch_rows`]), then what is due after it: an
    /// evaluation, and at an epoch's end the per-epoch schedule's step and early stopping's
    /// check, in the order of PyTorch's epoch loop (evaluate, then `scheduler.step(metric)`).
    pub fn step(&mut self) -> Result<StepOutcome> {
        let lr = self.update()?;
        self.after_update(lr)
    }

    /// Whether the run evaluates after `done` updates as it goes (every `eval_every`, and at
    /// each epoch's end where a per-epoch schedule watches a validation metric).
    pub fn evaluates_after(&self, done: u64) -> bool {
        let epoch_end = done.is_multiple_of(self.batches_per_epoch);
        // A per-epoch schedule watching a validation metric needs it at every epoch's end,
        // whatever eval_every says (early stopping checks at the evaluations there are).
        let epoch_eval = epoch_end
            && matches!(
                self.epoch_monitor,
                Some(Monitor::ValLoss | Monitor::ValAccuracy)
            );
        let eval_due = match self.eval_every {
            EvalEvery::Epoch => epoch_end,
            EvalEvery::Updates(n) => done.is_multiple_of(n),
        };
        eval_due || epoch_eval
    }

    /// What [`Run::step`] does after its update, which used rate `lr` ([`Run::update`]). A
    /// caller that records each update can do so between the two, so that an update whose
    /// evaluation fails (a validation loss that is not finite) is still on record.
    pub fn after_update(&mut self, lr: f64) -> Result<StepOutcome> {
        let done = self.steps_done();
        let epoch_end = done.is_multiple_of(self.batches_per_epoch);
        let (epoch_monitor, stop_monitor) =
            (self.epoch_monitor, self.early_stopping.map(|e| e.monitor));
        let watched = |m: Monitor| epoch_monitor == Some(m) || stop_monitor == Some(m);
        let evaluation = if self.evaluates_after(done) {
            self.evaluate()?
        } else {
            None
        };
        let train_loss = if epoch_end && watched(Monitor::TrainLoss) {
            Some(self.epoch_train_loss(done)?)
        } else {
            None
        };
        if epoch_end {
            self.state.epoch_losses.clear();
        }
        let value = |m: Monitor| match m {
            Monitor::ValLoss => evaluation.map(|e| e.loss as f64),
            Monitor::ValAccuracy => evaluation.and_then(|e| e.accuracy),
            Monitor::TrainLoss => train_loss,
            Monitor::Loss => None,
        };
        if epoch_end && self.trainer.schedule_interval() == Interval::Epoch {
            let observation = Observation {
                loss: self.epoch_monitor.and_then(value),
                grad_norm_sq: None,
            };
            if let Err(e) = self.trainer.end_epoch(&observation)
                && done < self.total_steps
            {
                // The rate an epoch's end sets is for the next epoch. After the run's last
                // update none uses it (and the trainer refuses any update that would).
                return Err(e);
            }
        }
        // "Best" is early stopping's improvement (its monitor, mode and min_delta), so
        // --save-best keeps what restore_best would restore; without early stopping, the
        // lowest validation loss.
        let mut improved = false;
        let mut stopped = None;
        if let Some(es) = self.early_stopping {
            if let Some(v) = value(es.monitor) {
                (improved, stopped) = self.check_early_stop(&es, v, done)?;
            }
        } else if let Some(v) = value(Monitor::ValLoss) {
            improved = self.state.best.is_none_or(|(b, _)| v < b);
            if improved {
                self.state.best = Some((v, done));
            }
        }
        Ok(StepOutcome {
            lr,
            evaluation,
            train_loss,
            improved,
            stopped,
        })
    }

    /// The mean batch loss of the epoch that update `done` ended, summed in f64 in update
    /// order (as `sum(losses) / len(losses)` over Python floats). Updates whose loss was not
    /// finite (skipped with `--on-nan skip`) are left out: they changed nothing.
    fn epoch_train_loss(&mut self, done: u64) -> Result<f64> {
        let losses = self.losses_since(done - self.batches_per_epoch, done)?;
        let finite: Vec<f64> = losses
            .iter()
            .filter(|l| l.is_finite())
            .map(|&l| l as f64)
            .collect();
        if finite.is_empty() {
            return Err(KilnError::Diverged {
                what: format!(
                    "the loss of every update of epoch {}",
                    self.epoch_of(done - 1)
                ),
                value: losses.first().copied().unwrap_or(f32::NAN) as f64,
                why: crate::error::TRAINING_DIVERGED,
            });
        }
        Ok(finite.iter().sum::<f64>() / finite.len() as f64)
    }

    /// The batch losses of updates `start..done` of the current epoch: those before the
    /// trainer's first update (a run resumed mid-epoch) come from the checkpoint.
    fn losses_since(&mut self, start: u64, done: u64) -> Result<Vec<f32>> {
        let first = self.trainer.first_step();
        let losses = self.trainer.losses()?;
        let mut out = if start < first {
            self.state.epoch_losses.clone()
        } else {
            Vec::new()
        };
        out.extend_from_slice(
            &losses[(start.max(first) - first) as usize..(done - first) as usize],
        );
        Ok(out)
    }

    /// Keras's `EarlyStopping.on_epoch_end` for one check of value `v` after update `done`.
    fn check_early_stop(
        &mut self,
        es: &EarlyStoppingConfig,
        v: f64,
        done: u64,
    ) -> Result<(bool, Option<EarlyStop>)> {
        let improves_on = |best: f64| {
            if es.minimizes() {
                v + es.min_delta < best
            } else {
                v - es.min_delta > best
            }
        };
        // The best so far, unless this check improves on it (the first check always does).
        let kept = self.state.stop_best.filter(|&(best, _)| !improves_on(best));
        self.state.wait += 1;
        let Some((best, best_step)) = kept else {
            self.state.stop_best = Some((v, done));
            if es.restore_best {
                self.state.best_params = Some(self.trainer.parameters()?);
            }
            self.state.wait = 0;
            return Ok((true, None));
        };
        // (Keras also requires epoch > 0: always so here, since the first check improves.)
        if self.state.wait >= es.patience {
            let stop = EarlyStop {
                step: done,
                epoch: self.epoch_of(done - 1),
                monitor: es.monitor.name().to_string(),
                best,
                best_step,
                wait: self.state.wait,
            };
            self.state.stopped = Some(stop.clone());
            return Ok((false, Some(stop)));
        }
        Ok((false, None))
    }

    /// With early stopping's `restore_best`: puts back the weights of its best check (Keras
    /// restores them at the end of training, stopped early or not). Returns the update they
    /// were measured after, if that was not the last one (then it changes nothing).
    pub fn finish(&mut self) -> Result<Option<u64>> {
        match (
            &self.early_stopping,
            &self.state.best_params,
            self.state.stop_best,
        ) {
            // The best check was the last update: its weights are the ones there.
            (Some(es), Some(params), Some((_, step)))
                if es.restore_best && step != self.steps_done() =>
            {
                self.trainer.set_parameters(params)?;
                Ok(Some(step))
            }
            _ => Ok(None),
        }
    }

    /// The next update alone, without what is due after it (see [`Run::step`]): the batch
    /// gathered in DataLoader order, one trainer step. Returns the rate it used.
    pub fn update(&mut self) -> Result<f64> {
        let t = self.steps_done();
        let (epoch, span) = self.batch_span(t);
        if let Placement::Device { .. } = self.placement {
            if self.order_on_device != Some(epoch) {
                // Once per epoch: the order the epoch's batches take rows in.
                let order: Vec<u32> = self
                    .rows_of_epoch(epoch)
                    .iter()
                    .map(|&r| r as u32)
                    .collect();
                self.trainer.set_order(&order)?;
                self.order_on_device = Some(epoch);
            }
            return self.trainer.step_data(span.start, span.len());
        }
        if let Placement::Streamed { window_rows, .. } = self.placement {
            let b = (t % self.batches_per_epoch) as usize;
            let window = match &self.window {
                Some((e, w)) if *e == epoch && w.contains(&b) => w.clone(),
                _ => {
                    // The next window starts at this batch (a resumed run's too).
                    let per_window = (window_rows / self.batch).max(1);
                    let w = b..(b + per_window).min(self.batches_per_epoch as usize);
                    self.rows_of_epoch(epoch);
                    let rows = w.start * self.batch..(w.end * self.batch).min(self.train.rows());
                    self.fill_batch(rows.clone());
                    self.trainer
                        .load_loaded_data(&self.xb, self.tb.as_targets())?;
                    let identity: Vec<u32> = (0..rows.len() as u32).collect();
                    self.trainer.set_order(&identity)?;
                    self.window = Some((epoch, w.clone()));
                    w
                }
            };
            let start = span.start - window.start * self.batch;
            return self.trainer.step_data(start, span.len());
        }
        // The epoch's order made (shuffled) if this is its first batch.
        self.rows_of_epoch(epoch);
        self.fill_batch(span);
        // The data was checked whole when it was loaded (finite values, labels in range).
        self.trainer.step_loaded(&self.xb, self.tb.as_targets())
    }

    /// Fills the batch buffers with the rows `order[span]` of the current epoch's order, read
    /// by field so that the buffers can be filled beside it.
    fn fill_batch(&mut self, span: std::ops::Range<usize>) {
        let rows = &self.order[span];
        let f = self.train.features;
        self.xb.clear();
        for &r in rows {
            self.xb.extend_from_slice(&self.train.x[r * f..(r + 1) * f]);
        }
        match (&self.train_targets, &mut self.tb) {
            (TargetData::Classes(all), TargetData::Classes(b)) => {
                b.clear();
                b.extend(rows.iter().map(|&r| all[r]));
            }
            (TargetData::Values(all), TargetData::Values(b)) => {
                let k = self.model.output();
                b.clear();
                for &r in rows {
                    b.extend_from_slice(&all[r * k..(r + 1) * k]);
                }
            }
            _ => unreachable!("tb is made to match train_targets"),
        }
    }

    /// Loss and accuracy on the held-out rows, or `None` without a validation split.
    pub fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        let Some((data, targets)) = &self.validation else {
            return Ok(None);
        };
        let out = if self.placement.validation_on_device() {
            self.trainer.predict_validation()?
        } else {
            self.trainer.predict_loaded(&data.x)?
        };
        let (loss, width) = (self.model.loss(), self.model.output());
        match evaluate(loss, width, &out, targets) {
            Err(KilnError::Diverged { value, why, .. }) => {
                // Name the first row whose loss is not finite.
                let row = (0..data.rows()).find(|&r| {
                    let one = targets.rows(r..r + 1, width);
                    evaluate(loss, width, &out[r * width..(r + 1) * width], &one).is_err()
                });
                Err(KilnError::Diverged {
                    what: match row {
                        Some(r) => {
                            format!("the validation loss (first at {})", data.describe_row(r))
                        }
                        None => "the validation loss".into(),
                    },
                    value,
                    why,
                })
            }
            other => other.map(Some),
        }
    }

    /// Saves a checkpoint into `dir` (atomically). The run takes the directory for itself the
    /// first time (see [`checkpoint::lock`]) and holds it until it is dropped or checkpoints
    /// elsewhere: another run writing there is refused instead of interleaving its files.
    pub fn checkpoint(&mut self, dir: &Path) -> Result<()> {
        if !self.checkpoint_lock.as_ref().is_some_and(|l| l.holds(dir)) {
            // Released first, so that checkpointing elsewhere gives the old directory back.
            self.checkpoint_lock = None;
            self.checkpoint_lock = Some(checkpoint::lock(dir)?);
        }
        let state = self.trainer.state()?;
        let epoch = self.epoch_of(state.steps);
        // The losses of this epoch so far, for its train_loss after a resume.
        let done = state.steps;
        let mut run = self.state.clone();
        run.epoch_losses = self.losses_since(done - done % self.batches_per_epoch, done)?;
        checkpoint::save(dir, self.trainer.layout(), &state, epoch, &run)
    }

    /// Hands the run a lock taken before it was built (a resume reads the directory it will
    /// write, so the lock comes first); [`Run::checkpoint`] into that directory then keeps it.
    pub fn hold_checkpoint_lock(&mut self, lock: checkpoint::DirLock) {
        self.checkpoint_lock = Some(lock);
    }

    /// Saves the weights in nn.Sequential layout. With `normalize = "standard"` the file's
    /// metadata holds `kiln.normalize_mean` and `kiln.normalize_std` (JSON arrays): inputs must
    /// be standardised with them before the model sees them.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let metadata = self.normalization.as_ref().map(|(mean, std)| {
            let json = |v: &[f32]| serde_json::to_string(v).expect("floats serialise");
            std::collections::HashMap::from([
                ("kiln.normalize_mean".to_string(), json(mean)),
                ("kiln.normalize_std".to_string(), json(std)),
            ])
        });
        weights::save(
            path,
            self.trainer.layout(),
            &self.trainer.parameters()?,
            metadata,
        )
    }
}

/// Mean loss of `outputs` against `targets`, and the accuracy of classifiers (argmax for
/// cross-entropy; p ≥ 0.5 for bce; logit ≥ 0 for bce_with_logits).
pub fn evaluate(
    loss: Loss,
    width: usize,
    outputs: &[f32],
    targets: &TargetData,
) -> Result<Evaluation> {
    let (value, _) = Device::Cpu.loss(loss, outputs, targets.as_targets(), width)?;
    let accuracy = match (loss, targets) {
        (Loss::CrossEntropy, TargetData::Classes(labels)) => {
            let correct = outputs
                .chunks(width)
                .zip(labels)
                .filter(|(row, l)| argmax(row) == **l as usize)
                .count();
            Some(correct as f64 / labels.len() as f64)
        }
        (Loss::Bce | Loss::BceWithLogits, TargetData::Values(t)) => {
            // Predicted positive at p ≥ 0.5: a probability (bce) or a logit ≥ 0.
            let cut = if loss == Loss::Bce { 0.5 } else { 0.0 };
            let correct = outputs
                .iter()
                .zip(t)
                .filter(|(o, t)| (**o >= cut) == (**t >= 0.5))
                .count();
            Some(correct as f64 / t.len() as f64)
        }
        _ => None,
    };
    if !value.is_finite() {
        return Err(KilnError::Diverged {
            what: "the validation loss".into(),
            value: value as f64,
            why: crate::error::OUTPUTS_OVERFLOW,
        });
    }
    Ok(Evaluation {
        loss: value,
        accuracy,
    })
}

/// Index of the largest value (the predicted class).
pub fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap_or(0)
}
