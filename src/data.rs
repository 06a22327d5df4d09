//! Datasets: the bundled digits data, a shuffled train/validation split, and standardisation.

use std::io::Read;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::error::{KilnError, Result};

/// A classification dataset held in memory: `x` is [rows, features] row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub features: usize,
    pub classes: usize,
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
}

const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

impl Dataset {
    /// UCI handwritten digits (1797 8×8 images, pixels 0..16, 10 classes), compiled into the
    /// binary. Source and terms: `data/digits.rst`.
    pub fn digits() -> Result<Dataset> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(DIGITS_GZ)
            .read_to_string(&mut text)
            .map_err(|e| KilnError::invalid("data/digits.csv.gz", e.to_string()))?;
        Dataset::from_labelled_csv("data/digits.csv.gz", &text, 10)
    }

    /// Parses CSV rows of `features…, label` (no header). Errors name the source and line.
    pub fn from_labelled_csv(source: &str, text: &str, classes: usize) -> Result<Dataset> {
        let mut features = None;
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = |what: String| KilnError::invalid(format!("{source}, line {}", i + 1), what);
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let n = fields.len() - 1;
            if n == 0 || *features.get_or_insert(n) != n {
                return Err(at(format!(
                    "{} fields, expected {}",
                    fields.len(),
                    features.map_or(2, |f| f + 1)
                )));
            }
            for f in &fields[..n] {
                let v: f32 = f
                    .parse()
                    .map_err(|_| at(format!("{f:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(at(format!("{f:?} is not finite")));
                }
                x.push(v);
            }
            let label = fields[n];
            match label.parse::<u32>() {
                Ok(l) if (l as usize) < classes => labels.push(l),
                _ => {
                    return Err(at(format!(
                        "label {label:?} is not a class in 0..{classes}"
                    )));
                }
            }
        }
        let features = features.ok_or_else(|| KilnError::invalid(source, "no data rows"))?;
        Ok(Dataset {
            features,
            classes,
            x,
            labels,
        })
    }

    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Shuffles the rows with `seed` and holds out `fraction` of them: (train, validation).
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(KilnError::invalid(
                "data.validation",
                format!("must be in [0, 1), got {fraction}"),
            ));
        }
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let held = (self.rows() as f64 * fraction).round() as usize;
        let take = |rows: &[usize]| Dataset {
            features: self.features,
            classes: self.classes,
            x: rows
                .iter()
                .flat_map(|&r| &self.x[r * self.features..(r + 1) * self.features])
                .copied()
                .collect(),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
        };
        Ok((take(&order[held..]), take(&order[..held])))
    }

    /// Per-feature mean and standard deviation (population, as scikit-learn's StandardScaler);
    /// constant features get a deviation of 1 so they map to 0.
    pub fn feature_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.rows().max(1) as f64;
        let f = self.features;
        let mut mean = vec![0.0f64; f];
        for row in self.x.chunks(f) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64 / n;
            }
        }
        let mut var = vec![0.0f64; f];
        for row in self.x.chunks(f) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2) / n;
            }
        }
        let std = var
            .iter()
            .map(|v| if *v > 0.0 { v.sqrt() as f32 } else { 1.0 })
            .collect();
        (mean.iter().map(|m| *m as f32).collect(), std)
    }

    /// x ← (x − mean) / std, feature by feature.
    pub fn standardize(&mut self, mean: &[f32], std: &[f32]) {
        for row in self.x.chunks_mut(self.features) {
            for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                *v = (*v - m) / s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_complete() {
        let d = Dataset::digits().unwrap();
        assert_eq!((d.rows(), d.features, d.classes), (1797, 64, 10));
        assert!(d.x.iter().all(|v| (0.0..=16.0).contains(v)));
        assert!((0..10).all(|c| d.labels.contains(&c)));
    }

    #[test]
    fn broken_csv_names_the_line() {
        let e = Dataset::from_labelled_csv("f.csv", "1,2,0\n1,x,1\n", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid f.csv, line 2: \"x\" is not a number"
        );
        let e = Dataset::from_labelled_csv("f.csv", "1,2,0\n1,1\n", 2).unwrap_err();
        assert!(
            e.to_string().contains("line 2: 2 fields, expected 3"),
            "{e}"
        );
        let e = Dataset::from_labelled_csv("f.csv", "1,2,5\n", 2).unwrap_err();
        assert!(
            e.to_string().contains("label \"5\" is not a class in 0..2"),
            "{e}"
        );
    }

    #[test]
    fn split_holds_out_a_fraction_and_keeps_every_row() {
        let d = Dataset::digits().unwrap();
        let (train, val) = d.split(0.2, 0).unwrap();
        assert_eq!((train.rows(), val.rows()), (1438, 359));
        let mut all: Vec<u32> = train.labels.iter().chain(&val.labels).copied().collect();
        let mut orig = d.labels.clone();
        all.sort();
        orig.sort();
        assert_eq!(all, orig);
    }
}
