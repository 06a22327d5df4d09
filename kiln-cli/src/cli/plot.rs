//! `kiln plot`: the training and validation loss and the learning rate of a `--log` file, and
//! the momentum where the schedule cycled it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_cli::plot::{Panel, Series, plot as draw};

use super::PlotArgs;
use super::log::LogLine;

pub fn plot(args: &PlotArgs) -> Result<()> {
    let text = kiln::weights::read_input_text(&args.metrics)
        .with_context(|| format!("reading {}", args.metrics.display()))?;
    let Curves {
        train,
        validation,
        lr,
        momentum,
    } = parse(&args.metrics, &text)?;
    let loss_panel = Panel {
        title: "loss".into(),
        y_label: "loss".into(),
        log_y: train.iter().chain(&validation).all(|(_, v)| *v > 0.0),
        series: [("training", train), ("validation", validation)]
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(name, points)| Series {
                name: name.into(),
                points,
            })
            .collect(),
    };
    let mut panels = vec![loss_panel];
    // A log of evaluations alone (`grep val_loss`) has no rates: the loss panel alone.
    if !lr.is_empty() {
        panels.push(Panel {
            title: "learning rate".into(),
            y_label: "lr".into(),
            log_y: false,
            series: vec![Series {
                name: "lr".into(),
                points: lr,
            }],
        });
    }
    if !momentum.is_empty() {
        panels.push(Panel {
            title: "momentum (β1 for the Adam family), cycled by the schedule".into(),
            y_label: "momentum".into(),
            log_y: false,
            series: vec![Series {
                name: "momentum".into(),
                points: momentum,
            }],
        });
    }
    draw(&args.output, &panels)?;
    Ok(())
}

type Points = Vec<(f64, f64)>;

/// The log's curves against the step.
struct Curves {
    train: Points,
    validation: Points,
    lr: Points,
    /// Where the schedule cycled it.
    momentum: Points,
}

/// The curves of the log's JSON lines.
fn parse(path: &Path, text: &str) -> Result<Curves> {
    let (mut train, mut validation, mut lr) = (Vec::new(), Vec::new(), Vec::new());
    let mut momentum = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}, line {}", path.display(), i + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let line: LogLine = serde_json::from_value(value)
            .with_context(|| format!("{}: not a line of a kiln --log file", at()))?;
        match line {
            LogLine::Update {
                step,
                lr: rate,
                loss,
                momentum: m,
                ..
            } => {
                if let Some(loss) = loss {
                    train.push((step as f64, loss as f64));
                }
                lr.push((step as f64, rate));
                if let Some(m) = m {
                    momentum.push((step as f64, m));
                }
            }
            // The run's curve: an evaluation added at its end (of restored weights, or where
            // --steps cut it) is not a point of it.
            LogLine::Evaluation {
                step,
                val_loss,
                end_of_run: false,
                ..
            } => validation.push((step as f64, val_loss as f64)),
            LogLine::Evaluation { .. } => {}
            LogLine::TrainLoss { .. } | LogLine::Skipped { .. } | LogLine::EarlyStop { .. } => {}
        }
    }
    if train.is_empty() && validation.is_empty() {
        bail!("{}: no losses to plot", path.display());
    }
    Ok(Curves {
        train,
        validation,
        lr,
        momentum,
    })
}
