//! The `--log` file: one JSON object per line, written by `kiln train` and read by `kiln plot`
//! through this one type.

use serde::{Deserialize, Serialize};

/// One line of a `--log` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogLine {
    /// An update: the rate it used, its batch's loss at the weights before it (`null` when
    /// not finite) and, where the schedule cycles it, the momentum (β1) it used.
    Update {
        step: u64,
        epoch: u64,
        lr: f64,
        loss: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        momentum: Option<f64>,
    },
    /// An evaluation on the held-out rows after update `step`. `end_of_run`: the one a run
    /// adds when it ends between the evaluations it makes as it goes (cut short by `--steps`,
    /// or of the best weights restored): not part of the run's curve, and dropped when the
    /// run is resumed.
    Evaluation {
        step: u64,
        epoch: u64,
        val_loss: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        end_of_run: bool,
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

    /// The update the line is about.
    pub fn step(&self) -> u64 {
        match *self {
            LogLine::Update { step, .. }
            | LogLine::Evaluation { step, .. }
            | LogLine::TrainLoss { step, .. }
            | LogLine::Skipped { step, .. }
            | LogLine::EarlyStop { step, .. } => step,
        }
    }
}

/// What a resumed run keeps of its log.
pub struct Kept {
    /// The lines, each ending in a newline.
    pub text: String,
    /// How many of the kept updates were skipped for a non-finite loss (`"loss": null`).
    pub skipped: u64,
}

/// The lines of a log `text` that a run resumed after `done` updates keeps: those about the
/// updates before it, but not what a run writes at its end (an end-of-run evaluation, the
/// count of skipped updates: the resumed run goes on past it and counts them all). Lines
/// written after the checkpoint (a run killed past it) go: the resumed run writes them again,
/// and so does a last line cut short by the kill. Other lines that are not a log's are kept
/// as they are.
pub fn kept_on_resume(text: &str, done: u64) -> Kept {
    let mut kept = Kept {
        text: String::with_capacity(text.len()),
        skipped: 0,
    };
    let cut_short = !text.is_empty() && !text.ends_with('\n');
    let count = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let keep = match serde_json::from_str::<LogLine>(line) {
            Ok(LogLine::Evaluation {
                end_of_run: true, ..
            })
            | Ok(LogLine::Skipped { .. }) => false,
            Ok(l) => l.step() < done,
            Err(_) if cut_short && i + 1 == count => false,
            Err(_) => !line.trim().is_empty(),
        };
        if keep {
            if let Ok(LogLine::Update { loss: None, .. }) = serde_json::from_str(line) {
                kept.skipped += 1;
            }
            kept.text.push_str(line);
            kept.text.push('\n');
        }
    }
    kept
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
            momentum: None,
        };
        let text = update.to_json();
        assert_eq!(text, r#"{"step":3,"epoch":0,"lr":0.05,"loss":null}"#);
        assert_eq!(serde_json::from_str::<LogLine>(&text).unwrap(), update);
        let cycled = LogLine::Update {
            step: 3,
            epoch: 0,
            lr: 0.05,
            loss: None,
            momentum: Some(0.9),
        };
        let text = cycled.to_json();
        assert_eq!(
            text,
            r#"{"step":3,"epoch":0,"lr":0.05,"loss":null,"momentum":0.9}"#
        );
        assert_eq!(serde_json::from_str::<LogLine>(&text).unwrap(), cycled);
        let eval = LogLine::Evaluation {
            step: 9,
            epoch: 1,
            val_loss: 0.25,
            val_accuracy: Some(0.5),
            end_of_run: false,
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
                end_of_run: false,
                ..
            }
        ));
    }

    #[test]
    fn a_resumed_run_keeps_the_lines_before_its_checkpoint() {
        let log = [
            r#"{"step":0,"epoch":0,"lr":0.1,"loss":1.0}"#,
            r#"{"step":1,"epoch":0,"lr":0.1,"loss":0.5}"#,
            r#"{"step":1,"epoch":0,"val_loss":0.7}"#,
            r#"{"step":1,"epoch":0,"val_loss":0.6,"end_of_run":true}"#,
            r#"{"step":2,"epoch":1,"lr":0.1,"loss":0.4}"#,
            "a note of the user's",
            "",
        ]
        .join("\n");
        let kept = kept_on_resume(&log, 2);
        assert_eq!(
            kept.text,
            [
                r#"{"step":0,"epoch":0,"lr":0.1,"loss":1.0}"#,
                r#"{"step":1,"epoch":0,"lr":0.1,"loss":0.5}"#,
                r#"{"step":1,"epoch":0,"val_loss":0.7}"#,
                "a note of the user's",
                "",
            ]
            .join("\n")
        );
        assert_eq!(kept.skipped, 0);
        // A kill mid-line leaves a last line without its newline: it goes. The count of
        // skipped updates a cut-short run wrote at its end goes too; its skips are counted.
        let log = [
            r#"{"step":0,"epoch":0,"lr":0.1,"loss":null}"#,
            r#"{"step":1,"epoch":0,"lr":0.1,"loss":0.5}"#,
            r#"{"step":1,"epoch":0,"skipped_updates":1}"#,
            r#"{"step":2,"#,
        ]
        .join("\n");
        let kept = kept_on_resume(&log, 2);
        assert_eq!(
            kept.text,
            [
                r#"{"step":0,"epoch":0,"lr":0.1,"loss":null}"#,
                r#"{"step":1,"epoch":0,"lr":0.1,"loss":0.5}"#,
                "",
            ]
            .join("\n")
        );
        assert_eq!(kept.skipped, 1);
    }
}
