//! Datasets: the bundled real datasets, CSV, safetensors and MNIST IDX files; a shuffled
//! train/validation split; standardisation; and the targets a loss needs.
//!
//! A dataset holds features `x` [N, F] and raw targets `y` [N, K] as f32. Whether y is class
//! labels or values is decided by the loss: cross-entropy reads a single integer column as
//! labels, the others read y as values.

mod bundled;
pub mod csv;
pub mod mnist;
pub mod safetensors;

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::error::{KilnError, Result};
use crate::ops::{self, Loss};

/// Features and targets held in memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Where it came from, for messages.
    pub source: String,
    /// Columns of `x`.
    pub features: usize,
    /// Features, [rows, features] row-major.
    pub x: Vec<f32>,
    /// Columns of `y`.
    pub targets: usize,
    /// Targets, [rows, targets] row-major.
    pub y: Vec<f32>,
    /// Where each row came from, for messages: its line in a CSV file, else its row in the
    /// file (kept through splits and shuffles).
    pub origin: Vec<usize>,
    /// "line" or "row": what `origin` counts.
    pub origin_unit: &'static str,
}

/// Targets in the form a loss takes.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetData {
    /// One class index per row (cross-entropy).
    Classes(Vec<u32>),
    /// Rows of target values (the other losses).
    Values(Vec<f32>),
}

impl TargetData {
    /// Borrows these targets in the form the kernels and `Trainer::step` take.
    pub fn as_targets(&self) -> ops::Targets<'_> {
        match self {
            TargetData::Classes(c) => ops::Targets::Classes(c),
            TargetData::Values(v) => ops::Targets::Values(v),
        }
    }

    /// The targets of `rows`, values being `width` to a row.
    pub(crate) fn rows(&self, rows: std::ops::Range<usize>, width: usize) -> TargetData {
        match self {
            TargetData::Classes(c) => TargetData::Classes(c[rows].to_vec()),
            TargetData::Values(v) => {
                TargetData::Values(v[rows.start * width..rows.end * width].to_vec())
            }
        }
    }
}

/// `x` and `y` make whole rows of `features` and `targets`, at least one.
fn check_shape(source: &str, features: usize, x: &[f32], targets: usize, y: &[f32]) -> Result<()> {
    if features == 0 || targets == 0 || x.is_empty() {
        return Err(KilnError::file(
            source,
            "no data: zero rows, features or targets",
        ));
    }
    let rows = x.len() / features;
    if !x.len().is_multiple_of(features) || Some(y.len()) != rows.checked_mul(targets) {
        return Err(KilnError::file(
            source,
            format!(
                "{} feature values and {} targets do not make {rows} rows",
                x.len(),
                y.len()
            ),
        ));
    }
    Ok(())
}

impl Dataset {
    /// [`Dataset::new`]'s shape checks again, for a data set whose public fields were
    /// changed after it was made.
    fn check_shape(&self) -> Result<()> {
        check_shape(&self.source, self.features, &self.x, self.targets, &self.y)
    }

    /// Checks shapes and finiteness; every reader ends here.
    pub fn new(
        source: impl Into<String>,
        features: usize,
        x: Vec<f32>,
        targets: usize,
        y: Vec<f32>,
    ) -> Result<Self> {
        let source = source.into();
        check_shape(&source, features, &x, targets, &y)?;
        ops::check_finite(&format!("{source}: features"), &x)?;
        ops::check_finite(&format!("{source}: targets"), &y)?;
        Ok(Dataset {
            source,
            features,
            origin: (0..x.len() / features).collect(),
            origin_unit: "row",
            x,
            targets,
            y,
        })
    }

    /// The row for which `bad` holds that comes first in the file (rows may be shuffled or
    /// split since they were read): the one an error should name.
    fn first_in_file(&self, bad: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.rows())
            .filter(|&r| bad(r))
            .min_by_key(|&r| self.origin.get(r).copied().unwrap_or(r))
    }

    /// Where row `r` came from: "FILE, line N" or "FILE, row N".
    pub fn describe_row(&self, r: usize) -> String {
        // A caller may have edited the rows without `origin`: fall back to the row itself.
        match self.origin.get(r) {
            Some(o) => format!("{}, {} {o}", self.source, self.origin_unit),
            None => format!("{}, row {r}", self.source),
        }
    }

    /// A bundled dataset by name: `digits`, `breast_cancer` or `diabetes`.
    pub fn bundled(name: &str) -> Result<Dataset> {
        bundled::load(name)
    }

    /// UCI handwritten digits: 1797 8×8 images, pixels 0..16, labels 0..9.
    pub fn digits() -> Result<Dataset> {
        bundled::load("digits")
    }

    /// Reads a data file by its form: a directory of MNIST IDX files, `.safetensors`, or CSV.
    pub fn from_path(path: &Path, csv_options: &csv::CsvOptions) -> Result<Dataset> {
        Self::from_path_split(path, csv_options, mnist::Split::Train)
    }

    /// As [`Dataset::from_path`]; an MNIST directory gives the files of `split`.
    pub fn from_path_split(
        path: &Path,
        csv_options: &csv::CsvOptions,
        split: mnist::Split,
    ) -> Result<Dataset> {
        match FileKind::of(path) {
            FileKind::Mnist => mnist::read_dir(path, split),
            FileKind::Safetensors => safetensors::read(path),
            FileKind::Csv => csv::read(path, csv_options),
        }
    }

    /// Number of rows (none without features).
    pub fn rows(&self) -> usize {
        self.x.len().checked_div(self.features).unwrap_or(0)
    }

    /// Rows `rows` (in that order), as a new dataset.
    pub(crate) fn select(&self, rows: &[usize]) -> Dataset {
        let (f, k) = (self.features, self.targets);
        Dataset {
            source: self.source.clone(),
            origin: rows
                .iter()
                .map(|&r| self.origin.get(r).copied().unwrap_or(r))
                .collect(),
            origin_unit: self.origin_unit,
            features: f,
            targets: k,
            x: rows
                .iter()
                .flat_map(|&r| &self.x[r * f..(r + 1) * f])
                .copied()
                .collect(),
            y: rows
                .iter()
                .flat_map(|&r| &self.y[r * k..(r + 1) * k])
                .copied()
                .collect(),
        }
    }

    /// Shuffles the rows with `seed` and holds out `fraction` of them: (train, validation).
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        self.check_shape()?;
        if !(0.0..1.0).contains(&fraction) {
            return Err(KilnError::invalid(
                "data.validation",
                format!("must be in [0, 1), got {fraction}"),
            ));
        }
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let held = (self.rows() as f64 * fraction).round() as usize;
        if held == self.rows() {
            return Err(KilnError::invalid(
                "data.validation",
                "leaves no training rows",
            ));
        }
        if held == 0 && fraction > 0.0 {
            return Err(KilnError::invalid(
                "data.validation",
                format!(
                    "{fraction} of {} rows holds out none; use a larger fraction, or 0 for no validation",
                    self.rows()
                ),
            ));
        }
        Ok((self.select(&order[held..]), self.select(&order[..held])))
    }

    /// Per-feature mean and standard deviation (population, as scikit-learn's StandardScaler);
    /// constant features get a deviation of 1 so they map to 0.
    pub fn feature_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.rows().max(1) as f64;
        let f = self.features;
        // Summed, then divided once: adding v/n row by row leaves a residue that made a
        // constant column's deviation 1e-15 instead of 0.
        let mut mean = vec![0.0f64; f];
        for row in self.x.chunks(f) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        for m in &mut mean {
            *m /= n;
        }
        let mut var = vec![0.0f64; f];
        for row in self.x.chunks(f) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .zip(&mean)
            .map(|(&sum, &m)| {
                let v = sum / n;
                // scikit-learn's test for a constant feature: a variance within the rounding
                // error of computing it (`_is_constant_feature`).
                let eps = f64::EPSILON;
                let constant = v <= n * eps * v + (n * m * eps).powi(2);
                match v.sqrt() as f32 {
                    // A deviation below f32's normal range would overflow the division.
                    s if s.is_normal() && !constant => s,
                    _ => 1.0,
                }
            })
            .collect();
        (mean.iter().map(|m| *m as f32).collect(), std)
    }

    /// x ← (x − mean) / std, feature by feature: one finite mean and one finite, positive
    /// (normal) deviation per feature, as [`Dataset::feature_stats`] gives them.
    pub fn standardize(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        let ctx = format!("{}: standardize", self.source);
        crate::ops::check_len(&ctx, "mean", mean.len(), self.features, "one per feature")?;
        crate::ops::check_len(&ctx, "std", std.len(), self.features, "one per feature")?;
        crate::ops::check_finite("standardize mean", mean)?;
        if let Some(i) = std.iter().position(|s| !s.is_normal() || *s < 0.0) {
            return Err(KilnError::invalid(
                "std",
                format!(
                    "{ctx}: deviations must be finite and > 0 (at least f32's smallest normal), \
                     feature {i} has {}",
                    std[i]
                ),
            ));
        }
        for row in self.x.chunks_mut(self.features) {
            for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }

    /// The targets as `loss` takes them for a model with `outputs` outputs: class labels for
    /// cross-entropy (one integer column below `outputs`), values of width `outputs` otherwise.
    pub fn targets_for(&self, loss: Loss, outputs: usize) -> Result<TargetData> {
        self.check_shape()?;
        let ctx = format!("{}: targets for {}", self.source, loss.name());
        if loss == Loss::CrossEntropy {
            if self.targets != 1 {
                return Err(KilnError::shape(
                    ctx,
                    format!(
                        "cross_entropy needs one label column, the data has {}",
                        self.targets
                    ),
                ));
            }
            let class = |v: f32| v >= 0.0 && v.fract() == 0.0 && (v as usize) < outputs;
            if let Some(row) = self.first_in_file(|r| !class(self.y[r])) {
                let v = self.y[row];
                return Err(KilnError::invalid(
                    self.describe_row(row),
                    format!("label {v} is not a class of a model with {outputs} outputs"),
                ));
            }
            return Ok(TargetData::Classes(
                self.y.iter().map(|&v| v as u32).collect(),
            ));
        }
        if self.targets != outputs {
            return Err(KilnError::shape(
                ctx,
                format!(
                    "the model has {outputs} outputs but the data has {} target columns",
                    self.targets
                ),
            ));
        }
        // The row's first target outside [0, 1], if any.
        let outside = |r: usize| {
            (r * self.targets..(r + 1) * self.targets).find(|&i| !(0.0..=1.0).contains(&self.y[i]))
        };
        if matches!(loss, Loss::Bce | Loss::BceWithLogits)
            && let Some(row) = self.first_in_file(|r| outside(r).is_some())
            && let Some(i) = outside(row)
        {
            return Err(KilnError::invalid(
                self.describe_row(row),
                format!(
                    "{} needs targets in [0, 1] (probabilities or 0/1 labels), got {}",
                    loss.name(),
                    self.y[i]
                ),
            ));
        }
        Ok(TargetData::Values(self.y.clone()))
    }
}

/// How [`Dataset::from_path`] reads a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory of MNIST's IDX files.
    Mnist,
    /// A `.safetensors` file (whatever the case of its extension).
    Safetensors,
    /// Anything else.
    Csv,
}

impl FileKind {
    /// The kind of `path`.
    pub fn of(path: &Path) -> FileKind {
        if path.is_dir() {
            FileKind::Mnist
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        {
            FileKind::Safetensors
        } else {
            FileKind::Csv
        }
    }

    /// "an MNIST directory", "a safetensors file", "a CSV file".
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Mnist => "an MNIST directory",
            FileKind::Safetensors => "a safetensors file",
            FileKind::Csv => "a CSV file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_datasets_are_complete() {
        let d = Dataset::digits().unwrap();
        assert_eq!((d.rows(), d.features, d.targets), (1797, 64, 1));
        assert!(d.x.iter().all(|v| (0.0..=16.0).contains(v)));
        let b = Dataset::bundled("breast_cancer").unwrap();
        assert_eq!((b.rows(), b.features), (569, 30));
        assert_eq!(
            b.y.iter().filter(|&&v| v == 0.0).count(),
            212,
            "212 malignant (label 0)"
        );
        let d = Dataset::bundled("diabetes").unwrap();
        assert_eq!((d.rows(), d.features), (442, 10));
        assert_eq!((d.x[0], d.y[0]), (59.0, 151.0));
        let e = Dataset::bundled("iris").unwrap_err().to_string();
        assert!(e.contains("digits, breast_cancer, diabetes"), "{e}");
    }

    #[test]
    fn standardize_takes_one_usable_statistic_per_feature() {
        let mut d = Dataset::new("d", 2, vec![1.0, 2.0, 3.0, 6.0], 1, vec![0.0, 1.0]).unwrap();
        for (mean, std, wanted) in [
            (
                vec![0.0],
                vec![1.0, 1.0],
                "`mean` has 1 elements, expected 2",
            ),
            (
                vec![0.0, 0.0],
                vec![1.0],
                "`std` has 1 elements, expected 2",
            ),
            (
                vec![0.0, f32::NAN],
                vec![1.0, 1.0],
                "mean contains a non-finite",
            ),
            (vec![0.0, 0.0], vec![1.0, 0.0], "feature 1 has 0"),
            (vec![0.0, 0.0], vec![-1.0, 1.0], "feature 0 has -1"),
            (
                vec![0.0, 0.0],
                vec![1.0, f32::INFINITY],
                "feature 1 has inf",
            ),
        ] {
            let e = d.standardize(&mean, &std).unwrap_err().to_string();
            assert!(e.contains(wanted), "{e}");
            assert_eq!(d.x, [1.0, 2.0, 3.0, 6.0], "a refused call changes nothing");
        }
        let (mean, std) = d.feature_stats();
        d.standardize(&mean, &std).unwrap();
        assert_eq!(d.x, [-1.0, -1.0, 1.0, 1.0]);
        // Without features there are no rows (not a division by zero).
        let empty = Dataset {
            features: 0,
            ..d.clone()
        };
        assert_eq!(empty.rows(), 0);
        // Fields changed after `new`: refused where rows are taken, not a panic.
        let mut cut = d.clone();
        cut.y.pop();
        let e = cut.split(0.5, 0).unwrap_err().to_string();
        assert!(e.contains("do not make 2 rows"), "{e}");
        let e = cut.targets_for(Loss::Mse, 1).unwrap_err().to_string();
        assert!(e.contains("do not make 2 rows"), "{e}");
    }

    #[test]
    fn sizes_that_cannot_be_counted_are_errors() {
        let e = Dataset::new("d", 1, vec![0.0, 1.0], 1 << 63, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not make 2 rows"), "{e}");
    }

    /// Population statistics as scikit-learn's StandardScaler, a constant column (any value,
    /// any row count) a deviation of exactly 1, a column with a small real spread its own.
    #[test]
    fn constant_features_get_a_deviation_of_one() {
        for value in [0.1f32, 0.3, 0.5, 1.7, 2.5, 3.0, 7.0, 1000.0] {
            for rows in [3usize, 37, 100, 1000] {
                let x: Vec<f32> = (0..rows).flat_map(|i| [i as f32, value]).collect();
                let d = Dataset::new("c", 2, x, 1, vec![0.0; rows]).unwrap();
                let (mean, std) = d.feature_stats();
                assert_eq!((mean[1], std[1]), (value, 1.0), "{value} × {rows}");
            }
        }
        let x: Vec<f32> = (0..10).map(|i| 1e6 + (i % 2) as f32).collect();
        let d = Dataset::new("s", 1, x, 1, vec![0.0; 10]).unwrap();
        let (mean, std) = d.feature_stats();
        assert_eq!((mean[0], std[0]), (1e6 + 0.5, 0.5));
    }

    #[test]
    fn split_holds_out_a_fraction_and_keeps_every_row() {
        let d = Dataset::digits().unwrap();
        let (train, val) = d.split(0.2, 0).unwrap();
        assert_eq!((train.rows(), val.rows()), (1438, 359));
        let mut all: Vec<u32> = train.y.iter().chain(&val.y).map(|&v| v as u32).collect();
        let mut orig: Vec<u32> = d.y.iter().map(|&v| v as u32).collect();
        all.sort();
        orig.sort();
        assert_eq!(all, orig);
    }

    #[test]
    fn targets_follow_the_loss() {
        let d = Dataset::new("t", 1, vec![0.0, 1.0], 1, vec![0.0, 2.0]).unwrap();
        assert_eq!(
            d.targets_for(Loss::CrossEntropy, 3).unwrap(),
            TargetData::Classes(vec![0, 2])
        );
        assert_eq!(
            d.targets_for(Loss::Mse, 1).unwrap(),
            TargetData::Values(vec![0.0, 2.0])
        );
        let e = d
            .targets_for(Loss::CrossEntropy, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t, row 1")
                && e.contains("label 2 is not a class of a model with 2 outputs"),
            "{e}"
        );
        let e = d.targets_for(Loss::Mse, 2).unwrap_err().to_string();
        assert!(
            e.contains("the model has 2 outputs but the data has 1 target columns"),
            "{e}"
        );
    }
}
