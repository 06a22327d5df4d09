//! The `--log` file: one JSON object per line, written by `kiln train` and read by `kiln plot`
//! through this one type.

use serde::{Deserialize, Serialize};

/// One line of a `--log` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogLine {
    /// An update: the rate it used and its batch's loss at the weights before it (`null` when
    /// not finite).
    Update {
        step: u64,
        epoch: u64,
        lr: f64,
        loss: Option<f32>,
    },
    /// An evaluation on the held-out rows after update `step`.
    Evaluation {
        step: u64,
        epoch: u64,
        val_loss: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
    },
    /// The epoch's mean batch loss, logged when something watches it.
    TrainLoss {
        step: u64,
        epoch: u64,
        train_loss: f64,
    },
    /// How many updates `--on-nan skip` skipped, at the end of a run that skipped any.
    Skipped {
        step: u64,
        epoch: u64,
        skipped_updates: u64,
    },
    /// Early stopping ended the run after update `step`, for the reason given.
    EarlyStop {
        step: u64,
        epoch: u64,
        early_stop: String,
    },
}

impl LogLine {
    /// The line's JSON text (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("log lines serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_nan_losses_are_null() {
        let update = LogLine::Update {
            step: 3,
            epoch: 0,
            lr: 0.05,
            loss: None,
        };
        let text = update.to_json();
        assert_eq!(text, r#"{"step":3,"epoch":0,"lr":0.05,"loss":null}"#);
        assert_eq!(serde_json::from_str::<LogLine>(&text).unwrap(), update);
        let eval = LogLine::Evaluation {
            step: 9,
            epoch: 1,
            val_loss: 0.25,
            val_accuracy: Some(0.5),
        };
        assert_eq!(
            serde_json::from_str::<LogLine>(&eval.to_json()).unwrap(),
            eval
        );
        // Logs of earlier versions (spaces after the colons) read the same.
        let old = r#"{"step": 9, "epoch": 1, "val_loss": 0.25}"#;
        assert!(matches!(
            serde_json::from_str::<LogLine>(old).unwrap(),
            LogLine::Evaluation {
                val_accuracy: None,
                ..
            }
        ));
    }
}
