//! `kiln schedule`: the learning rate a `[schedule]` table gives for each update, as CSV or
//! JSON, optionally plotted; and the momentum (β1) too where the schedule cycles it.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use kiln::schedule::{Interval, Observation, ScheduleConfig};
use kiln_cli::plot::{Panel, Series, plot};

use super::{ScheduleArgs, ScheduleFormat};

/// The most rates `kiln schedule` lists: 800 MB of numbers, far past any plot or table.
const MAX_STEPS: usize = 100_000_000;
/// The most rates drawn: a plot of more has more points than pixels by far, and an SVG of
/// them would be gigabytes.
const MAX_PLOTTED: usize = 1_000_000;

pub fn schedule(args: &ScheduleArgs) -> Result<()> {
    let Some(listed) = args
        .steps
        .checked_mul(args.batches_per_epoch.unwrap_or(1).max(1))
        .filter(|&n| n <= MAX_STEPS)
    else {
        bail!(
            "--steps: at most {MAX_STEPS} rates can be listed (with --batches-per-epoch, steps × batches)"
        );
    };
    if let Some(path) = &args.plot {
        kiln_cli::plot::check_plot_path(path)?;
        if listed > MAX_PLOTTED {
            bail!("--plot: at most {MAX_PLOTTED} rates can be drawn");
        }
    }
    let (mut rates, interval) = rates(&args.file, args.steps, args.observations.as_deref())?;
    // Cycled from the first update on, or not at all.
    let cycled = rates.first().is_some_and(|r| r.momentum.is_some());
    let mut unit = "step";
    match (interval, args.batches_per_epoch) {
        (Interval::Epoch, Some(0)) => bail!("--batches-per-epoch must be at least 1"),
        (Interval::Epoch, Some(n)) => {
            // Each epoch's rate holds for every update of the epoch.
            rates = rates
                .iter()
                .flat_map(|&r| std::iter::repeat_n(r, n))
                .collect();
        }
        (Interval::Epoch, None) => unit = "epoch",
        (Interval::Update, Some(_)) => bail!(
            "{}: --batches-per-epoch is for a schedule with interval = \"epoch\"; this one steps every update",
            args.file.display()
        ),
        (Interval::Update, None) => {}
    }
    // Written as it goes, through one buffer: a hundred million rates are too many to join in
    // memory, or to print a line at a time.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        ScheduleFormat::Csv => {
            writeln!(out, "{unit},lr{}", if cycled { ",momentum" } else { "" })?;
            for (t, r) in rates.iter().enumerate() {
                match r.momentum.filter(|_| cycled) {
                    Some(m) => writeln!(out, "{t},{:?},{m:?}", r.lr)?,
                    None => writeln!(out, "{t},{:?}", r.lr)?,
                }
            }
        }
        ScheduleFormat::Json => {
            write!(out, "{{\"lr\": [")?;
            for (t, r) in rates.iter().enumerate() {
                write!(out, "{}{:?}", if t == 0 { "" } else { ", " }, r.lr)?;
            }
            if cycled {
                write!(out, "], \"momentum\": [")?;
                for (t, r) in rates.iter().enumerate() {
                    let m = r.momentum.unwrap_or(f64::NAN);
                    write!(out, "{}{m:?}", if t == 0 { "" } else { ", " })?;
                }
            }
            writeln!(out, "]}}")?;
        }
    }
    out.flush()?;
    if let Some(out) = &args.plot {
        let series = Series::over_updates("lr", rates.iter().map(|r| r.lr));
        let title = format!("learning rate: {}", args.file.display());
        let mut panels = vec![Panel {
            title,
            y_label: "learning rate".into(),
            series: vec![series],
            log_y: false,
        }];
        if cycled {
            let momenta = rates.iter().map(|r| r.momentum.unwrap_or(f64::NAN));
            panels.push(Panel {
                title: "momentum (β1 for the Adam family), cycled by the schedule".into(),
                y_label: "momentum".into(),
                series: vec![Series::over_updates("momentum", momenta)],
                log_y: false,
            });
        }
        plot(out, &panels)?;
    }
    Ok(())
}

/// What a schedule sets for one update (or epoch).
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// The learning rate.
    pub lr: f64,
    /// The momentum (β1), where the schedule cycles it.
    pub momentum: Option<f64>,
}

/// The rates (and cycled momenta) for updates (or epochs, by the table's interval) 0..steps
/// of the `[schedule]` table in `file`, fed the observations in `observations` (line t is
/// observed after update, or epoch, t), and the interval.
pub fn rates(
    file: &Path,
    steps: usize,
    observations: Option<&Path>,
) -> Result<(Vec<Rate>, Interval)> {
    let text = kiln::weights::read_input_text(file)
        .with_context(|| format!("reading {}", file.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let table = match doc.remove("schedule") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!(
            "{}: `schedule` must be a table ([schedule])",
            file.display()
        ),
        None => bail!("{}: no [schedule] table", file.display()),
    };
    // In a run file the base rate defaults to [optimizer].lr (itself defaulting to PyTorch's
    // rate for the optimizer).
    let optimizer = match doc.remove("optimizer") {
        Some(toml::Value::Table(t)) => Some(
            kiln::optim::OptimizerConfig::from_table(t)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?,
        ),
        Some(_) => bail!(
            "{}: `optimizer` must be a table ([optimizer])",
            file.display()
        ),
        None => None,
    };
    let config =
        ScheduleConfig::from_table(table).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut scheduler = config
        .build(optimizer.as_ref().map(|o| o.lr))
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    // A momentum the run file's optimizer cannot take fails here as training would.
    let optimizer = match optimizer.filter(|_| scheduler.momentum().is_some()) {
        Some(o) => Some(
            o.optimizer
                .cycling_momentum()
                .map_err(|e| anyhow!("{}: {e}", file.display()))?,
        ),
        None => None,
    };

    let observed = match observations {
        Some(path) => read_observations(path)?,
        None => Vec::new(),
    };
    let needed = steps.saturating_sub(1);
    if scheduler.needs().any() && observed.len() < needed {
        let got = observed.len();
        match observations {
            Some(path) => bail!(
                "{}: {got} observations, but {steps} steps need {needed} (one after each update but the last)",
                path.display()
            ),
            None => bail!(
                "{}: this schedule follows observations; give --observations FILE with {needed} lines",
                file.display()
            ),
        }
    }
    let interval = config.interval;
    let mut rates = Vec::new();
    for t in 0..steps {
        let momentum = scheduler.momentum();
        if let Some(why) = optimizer
            .as_ref()
            .zip(momentum)
            .and_then(|(o, m)| o.refuse_momentum(m, t as u64))
        {
            bail!("{}: invalid schedule: {why}", file.display());
        }
        rates.push(Rate {
            lr: scheduler.lr(),
            momentum,
        });
        if t + 1 < steps {
            let o = observed
                .get(t)
                .map_or(Observation::default(), |&v| Observation::value(v));
            scheduler
                .step(&o)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
        }
    }
    Ok((rates, interval))
}

/// One finite number per line; blank lines are skipped.
fn read_observations(path: &Path) -> Result<Vec<f64>> {
    let text = kiln::weights::read_input_text(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<f64>() {
            Ok(v) if v.is_finite() => values.push(v),
            _ => bail!(
                "{}, line {}: {line:?} is not a finite number",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(values)
}
