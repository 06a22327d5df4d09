//! The real datasets compiled into the binary (scikit-learn's copies; descriptions and terms
//! in data/*.rst).

use std::io::Read;

use super::Dataset;
use super::csv::{CsvOptions, Header, parse};
use crate::error::{KilnError, Result};

const DIGITS: &[u8] = include_bytes!("../../data/digits.csv.gz");
const BREAST_CANCER: &str = include_str!("../../data/breast_cancer.csv");
const DIABETES_X: &[u8] = include_bytes!("../../data/diabetes_data_raw.csv.gz");
const DIABETES_Y: &[u8] = include_bytes!("../../data/diabetes_target.csv.gz");

pub const NAMES: [&str; 3] = ["digits", "breast_cancer", "diabetes"];

fn gunzip(name: &str, bytes: &[u8]) -> Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| KilnError::file(name, e))?;
    Ok(text)
}

pub fn load(name: &str) -> Result<Dataset> {
    let last = CsvOptions::default();
    match name {
        "digits" => parse(
            "data/digits.csv.gz",
            &gunzip("data/digits.csv.gz", DIGITS)?,
            &CsvOptions {
                header: Header::No,
                ..last
            },
        ),
        // First line: "569,30,malignant,benign" (counts and class names), not column names.
        "breast_cancer" => parse(
            "data/breast_cancer.csv",
            BREAST_CANCER,
            &CsvOptions {
                header: Header::Yes,
                ..last
            },
        ),
        "diabetes" => {
            let features = gunzip("data/diabetes_data_raw.csv.gz", DIABETES_X)?;
            let target = gunzip("data/diabetes_target.csv.gz", DIABETES_Y)?;
            // Space-separated features; targets one per line: join them into rows.
            let rows: Vec<String> = features
                .lines()
                .filter(|l| !l.trim().is_empty())
                .zip(target.lines().filter(|l| !l.trim().is_empty()))
                .map(|(f, t)| {
                    format!(
                        "{},{}",
                        f.split_whitespace().collect::<Vec<_>>().join(","),
                        t.trim()
                    )
                })
                .collect();
            parse(
                "data/diabetes",
                &rows.join("\n"),
                &CsvOptions {
                    header: Header::No,
                    ..last
                },
            )
        }
        other => Err(KilnError::invalid(
            "data.source",
            format!(
                "unknown bundled dataset {other:?}; bundled: {}",
                NAMES.join(", ")
            ),
        )),
    }
}
