//! A training run from a run file: data loaded, split and normalised; the model built (or its
//! weights loaded); updates over batches in DataLoader order; evaluation on the held-out rows;
//! checkpoints that resume exactly.

pub mod checkpoint;
pub mod config;

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use config::{DEFAULT_RUN, Normalize, RunConfig};

use crate::data::{Dataset, TargetData};
use crate::device::Device;
use crate::error::{KilnError, Result};
use crate::model::Sequential;
use crate::ops::{self, Loss};
use crate::optim::OptimizerConfig;
use crate::schedule::ScheduleConfig;
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
        let data = match (&config.data.source, &config.data.path) {
            (Some(name), None) => Dataset::bundled(name)?,
            (None, Some(path)) => Dataset::from_path(&base_dir.join(path), &config.csv_options())?,
            _ => {
                return Err(KilnError::invalid(
                    "data",
                    "give either source (a bundled dataset) or path",
                ));
            }
        };
        let (mut train, mut validation) = if config.data.validation > 0.0 {
            let (t, v) = data.split(config.data.validation, config.data.seed)?;
            (t, Some(v))
        } else {
            (data, None)
        };
        let normalization = (config.data.normalize == Normalize::Standard).then(|| {
            let (mean, std) = train.feature_stats();
            train.standardize(&mean, &std);
            if let Some(v) = &mut validation {
                v.standardize(&mean, &std);
            }
            (mean, std)
        });
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

    fn options(&self, config: &RunConfig) -> Result<TrainOptions> {
        Ok(TrainOptions {
            optimizer: self.optimizer.optimizer.clone(),
            max_batch: self.batch,
            seed: config.data.seed,
            clip_grad_norm: config.train.clip_grad_norm,
        })
    }

    fn into_run(self, config: RunConfig, trainer: Trainer) -> Result<Run> {
        let outputs = self.model.output();
        let loss = self.model.loss();
        let train_targets = self.train.targets_for(loss, outputs)?;
        let validation = self
            .validation
            .map(|v| v.targets_for(loss, outputs).map(|t| (v, t)))
            .transpose()?;
        let tb = match train_targets {
            TargetData::Classes(_) => TargetData::Classes(Vec::new()),
            TargetData::Values(_) => TargetData::Values(Vec::new()),
        };
        Ok(Run {
            config,
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

/// A training run: see the module docs.
pub struct Run {
    /// The run file it came from.
    pub config: RunConfig,
    /// The model.
    pub model: Sequential,
    /// The trainer (parameters, optimizer, schedule, device).
    pub trainer: Trainer,
    train: Dataset,
    train_targets: TargetData,
    validation: Option<(Dataset, TargetData)>,
    /// Rows per update (the data set's size if the batch is larger).
    pub batch: usize,
    /// Batches in one pass over the training rows.
    pub batches_per_epoch: u64,
    /// Updates the run makes in all.
    pub total_steps: u64,
    /// Mean and standard deviation of each feature over the training rows, if standardised.
    normalization: Stats,
    /// The row order of `order_epoch`.
    order: Vec<usize>,
    order_epoch: Option<u64>,
    xb: Vec<f32>,
    tb: TargetData,
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
        let layout = p.model.param_layout(PARAM_ALIGN);
        let params = match init {
            Some(path) => weights::load(path, &layout)?,
            None => p.model.init_params(&layout, config.data.seed),
        };
        let schedule = match &config.schedule {
            Some(table) => {
                ScheduleConfig::from_table(table.clone())?.build(Some(p.optimizer.lr))?
            }
            None => crate::schedule::Scheduler::fixed(p.optimizer.lr)?,
        };
        let trainer = Trainer::with_params(
            device,
            p.model.clone(),
            p.options(&config)?,
            schedule,
            params,
        )?;
        p.into_run(config, trainer)
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
        let (state, _epoch) = checkpoint::load(dir, &p.model.param_layout(PARAM_ALIGN))?;
        let trainer = Trainer::resume(device, p.model.clone(), p.options(&config)?, state)?;
        p.into_run(config, trainer)
    }

    /// Updates done.
    pub fn steps_done(&self) -> u64 {
        self.trainer.steps()
    }

    /// The epoch update `step` belongs to.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.batches_per_epoch
    }

    /// Whether every update has been made.
    pub fn finished(&self) -> bool {
        self.steps_done() >= self.total_steps
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
        let (epoch, index) = (
            t / self.batches_per_epoch,
            (t % self.batches_per_epoch) as usize,
        );
        let batch = self.batch;
        let order = self.rows_of_epoch(epoch);
        order[index * batch..((index + 1) * batch).min(order.len())].to_vec()
    }

    /// Runs the next update (see [`Run::batch_rows`]). Returns the rate it used.
    pub fn step(&mut self) -> Result<f64> {
        let rows = self.batch_rows(self.steps_done());
        let f = self.train.features;
        self.xb.clear();
        for &r in &rows {
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
                for &r in &rows {
                    b.extend_from_slice(&all[r * k..(r + 1) * k]);
                }
            }
            _ => unreachable!("tb is made to match train_targets"),
        }
        self.trainer.step(&self.xb, self.tb.as_targets())
    }

    /// Loss and accuracy on the held-out rows, or `None` without a validation split.
    pub fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        let Some((data, targets)) = &self.validation else {
            return Ok(None);
        };
        let out = self.trainer.predict(&data.x)?;
        Ok(Some(evaluate(
            self.model.loss(),
            self.model.output(),
            &out,
            targets,
        )?))
    }

    /// Saves a checkpoint into `dir` (atomically).
    pub fn checkpoint(&mut self, dir: &Path) -> Result<()> {
        let state = self.trainer.state()?;
        let epoch = self.epoch_of(state.steps);
        checkpoint::save(dir, self.trainer.layout(), &state, epoch)
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
/// cross-entropy; p > 0.5 for bce; logit > 0 for bce_with_logits).
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
            let cut = if loss == Loss::Bce { 0.5 } else { 0.0 };
            let correct = outputs
                .iter()
                .zip(t)
                .filter(|(o, t)| (**o > cut) == (**t > 0.5))
                .count();
            Some(correct as f64 / t.len() as f64)
        }
        _ => None,
    };
    ops::check_finite("validation loss", &[value])?;
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
