//! `kiln train`: a run file (or the bundled digits classifier) on the chosen device, with
//! progress, JSON-lines metrics, checkpoints and resume.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::Device;
use kiln::run::{Evaluation, Run, RunConfig};

use super::log::LogLine;
use super::{OnNan, TrainArgs};

/// Losses are read back from the device in bulk, this many updates at a time.
const REPORT_EVERY: u64 = 50;

pub fn train(args: &TrainArgs) -> Result<()> {
    let (config, base_dir) = match &args.run {
        Some(path) => (
            RunConfig::from_file(path)?,
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ),
        None => (RunConfig::default_run(), ".".into()),
    };
    // The data files the run reads, where the run file names them (relative to its folder).
    let data_files: Vec<std::path::PathBuf> = [&config.data.path, &config.data.validation_path]
        .into_iter()
        .flatten()
        .map(|p| base_dir.join(p))
        .collect();
    check_outputs(args, &data_files)?;
    // Errors in what the run file describes say which run file.
    let run_file = || {
        args.run
            .as_ref()
            .map_or("the default run".to_string(), |p| p.display().to_string())
    };
    let checkpoint_dir = checkpoint_dir(args);
    // Held to the end of the run: one run per checkpoint directory.
    let lock = checkpoint_dir
        .map(kiln::run::checkpoint::lock)
        .transpose()?;
    let (device, why) = Device::select(args.device, &args.adapter.options())?;
    let say = |line: &str| -> Result<()> {
        if !args.quiet {
            outln!("{line}")?;
        }
        Ok(())
    };
    say(&why)?;
    let mut run = match &args.resume {
        Some(dir) => {
            Run::resume(config, &base_dir, &device, dir, args.steps).with_context(run_file)?
        }
        None => Run::new(config, &base_dir, &device, args.init.as_deref(), args.steps)
            .with_context(run_file)?,
    };
    if let Some(lock) = lock {
        run.hold_checkpoint_lock(lock);
    }
    if args.on_nan == OnNan::Skip {
        run.trainer.skip_non_finite_losses(true);
    }
    say(&run.placement().to_string())?;
    let start = run.steps_done();
    say(&format!(
        "training {} ({} → {} outputs, {} updates{}, batch {}, {} per epoch)",
        args.run
            .as_ref()
            .map_or("the bundled digits classifier".into(), |p| p
                .display()
                .to_string()),
        run.model().input(),
        run.model().output(),
        run.total_steps(),
        if start > 0 {
            format!(", resuming at {start}")
        } else {
            String::new()
        },
        run.batch(),
        run.batches_per_epoch(),
    ))?;

    // Updates the log holds as skipped from before a resume: the log's count of the run's
    // skips covers them, as an uninterrupted run's would.
    let mut skipped_before = 0u64;
    let mut log = match &args.log {
        // A resumed run appends, so one file holds the whole run: each update once, the lines
        // of a run killed past its checkpoint cut back to it first.
        Some(path) => Some(Log {
            out: BufWriter::new(
                if args.resume.is_some() {
                    if path.is_file() {
                        let text = kiln::weights::read_input_text(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        let kept = super::log::kept_on_resume(&text, start);
                        skipped_before = kept.skipped;
                        if kept.text != text {
                            kiln::weights::write_atomic(path, kept.text.as_bytes())?;
                        }
                    }
                    OpenOptions::new().append(true).create(true).open(path)
                } else {
                    File::create(path)
                }
                .with_context(|| format!("opening {}", path.display()))?,
            ),
            path: path.clone(),
        }),
        None => None,
    };
    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(run.total_steps());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} epoch {prefix} {msg} {per_sec} ETA {eta}",
            )
            .expect("a valid template"),
        );
        bar.set_position(start);
        bar
    });

    let started = Instant::now();
    // (update, rate, cycled momentum) of the updates not yet logged.
    let mut pending: Vec<(u64, f64, Option<f64>)> = Vec::new();
    let mut last_loss = f32::NAN;
    let mut last_evaluation = None;
    let mut skipped = 0u64;
    while !run.finished() {
        let step = run.steps_done();
        let momentum = run.trainer.momentum();
        // On a failure, the updates before it are logged first, and a loss that was not
        // finite among them is what is reported: it is the cause (a schedule that follows the
        // loss, or an evaluation of parameters it ruined, only fails later).
        let outcome = run.update().and_then(|lr| {
            pending.push((step, lr, momentum));
            run.after_update(lr)
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                if let Some(bar) = &progress {
                    bar.finish_and_clear();
                }
                let reported = report(
                    &mut run,
                    &mut pending,
                    log.as_mut(),
                    args.on_nan,
                    &mut skipped,
                );
                let cause = match reported {
                    Err(stop) if stop.is::<NonFiniteLoss>() => stop,
                    Err(other) => anyhow::Error::from(e)
                        .context(format!("(logging the updates before it failed: {other:#})")),
                    Ok(_) => e.into(),
                };
                if skipped_before + skipped > 0 {
                    let line = skipped_line(&run, skipped_before + skipped);
                    if let Err(w) = write_line(log.as_mut(), &line) {
                        return Err(cause.context(format!("(and {w:#})")));
                    }
                }
                if let Some(log) = &mut log
                    && let Err(w) = log.flush()
                {
                    return Err(cause.context(format!("(and {w:#})")));
                }
                return Err(cause);
            }
        };
        let lr = outcome.lr;
        let done = run.steps_done();
        let epoch_end = done % run.batches_per_epoch() == 0;
        let checkpoint_due = checkpoint_dir.filter(|_| done % args.checkpoint_every.max(1) == 0);
        let noted = outcome.evaluation.is_some() || outcome.train_loss.is_some();
        if done % REPORT_EVERY == 0
            || epoch_end
            || checkpoint_due.is_some()
            || noted
            || run.finished()
        {
            last_loss = report(
                &mut run,
                &mut pending,
                log.as_mut(),
                args.on_nan,
                &mut skipped,
            )?;
            match &progress {
                Some(bar) => {
                    bar.set_position(done);
                    bar.set_prefix(run.epoch_of(done.saturating_sub(1)).to_string());
                    bar.set_message(format!("loss {last_loss:.4} lr {lr:.3e}"));
                }
                None if !args.quiet
                    && (done % (run.total_steps() / 10).max(1) == 0 || run.finished()) =>
                {
                    let rate = (done - start) as f64 / started.elapsed().as_secs_f64();
                    outln!(
                        "step {done:>7}/{}  epoch {:>4}  loss {last_loss:.4}  lr {lr:.4e}  {rate:.0} steps/s",
                        run.total_steps(),
                        run.epoch_of(done - 1)
                    )?;
                }
                None => {}
            }
        }
        let (at, epoch) = (done - 1, run.epoch_of(done - 1));
        if let Some(train_loss) = outcome.train_loss {
            write_line(
                log.as_mut(),
                &LogLine::TrainLoss {
                    step: at,
                    epoch,
                    train_loss,
                },
            )?;
        }
        if let Some(e) = &outcome.evaluation {
            write_evaluation(log.as_mut(), at, epoch, e, false)?;
            last_evaluation = Some((done, *e));
        }
        if outcome.improved
            && let Some(path) = &args.save_best
        {
            run.save_weights(path)?;
        }
        if let Some(stop) = &outcome.stopped {
            write_line(
                log.as_mut(),
                &LogLine::EarlyStop {
                    step: at,
                    epoch,
                    early_stop: stop.reason(),
                },
            )?;
            say(&format!("early stop after update {at}: {}", stop.reason()))?;
        }
        if let Some(dir) = checkpoint_due
            && !run.finished()
        {
            checkpoint(&mut run, dir, log.as_mut())?;
        }
    }

    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = run.steps_done();
    if skipped_before + skipped > 0 {
        write_line(log.as_mut(), &skipped_line(&run, skipped_before + skipped))?;
    }
    if skipped > 0 {
        if let Some(log) = &mut log {
            log.flush()?;
        }
        // A run from its start that trained nothing failed; a resumed part of a run whose
        // every update was skipped still carries the updates before it, and its checkpoint.
        if skipped == done - start && start == 0 {
            bail!(
                "every one of the {skipped} updates had a non-finite loss and was skipped: nothing was trained (lower the learning rate, or check the data)"
            );
        }
    }
    // The checkpoint holds the run as it stopped (weights, optimizer state and schedule of
    // one update), so a resume with more updates continues it exactly.
    if let Some(dir) = checkpoint_dir {
        checkpoint(&mut run, dir, log.as_mut())?;
    }
    // Keras's restore_best_weights: back to the best check's weights, stopped early or not,
    // for --save and the final evaluation.
    let restored = run.finish()?;
    if let Some(step) = restored {
        say(&format!(
            "restored the weights of the best check (after update {})",
            step.saturating_sub(1)
        ))?;
        last_evaluation = None;
    }
    if let Some(path) = &args.save {
        run.save_weights(path)?;
    }
    if let Some(path) = args.save_best.as_ref().filter(|p| !p.exists()) {
        say(&format!(
            "--save-best: nothing saved to {}: the run made no evaluation as it went (no \
             validation rows, or fewer updates than eval_every or an epoch)",
            path.display()
        ))?;
    }
    let skips = if skipped > 0 {
        format!(", {skipped} skipped for a non-finite loss")
    } else {
        String::new()
    };
    if done == start {
        // `--steps 0`: the initial weights, saved (--save) or evaluated; no loss to report.
        say(&format!("no updates made on {}", device.name()))?;
    } else {
        say(&format!(
            "{} updates in {elapsed:.2} s ({:.0} steps/s) on {}{skips}; last training loss {last_loss:.4}",
            done - start,
            (done - start) as f64 / elapsed.max(1e-9),
            device.name()
        ))?;
    }
    // The last update's evaluation, if the loop made one; otherwise one now. A run resumed at
    // its end whose last update was evaluated as it went has that evaluation in its log
    // already: it is not logged again as an end-of-run one.
    // (Not restored best weights: their evaluation is an end-of-run one, also in the
    // uninterrupted run's log.)
    let logged_before =
        done == start && done > 0 && run.evaluates_after(done) && restored.is_none();
    let evaluation = match last_evaluation {
        Some((at, e)) if at == done => Some(e),
        _ => {
            let e = run.evaluate()?;
            if let Some(e) = e.as_ref().filter(|_| !logged_before) {
                let at = done.saturating_sub(1);
                write_evaluation(log.as_mut(), at, run.epoch_of(at), e, true)?;
            }
            e
        }
    };
    if let Some(e) = evaluation {
        let accuracy = e
            .accuracy
            .map_or(String::new(), |a| format!(", accuracy {:.2}%", 100.0 * a));
        say(&format!("validation: loss {:.4}{accuracy}", e.loss))?;
    }
    if let Some(log) = &mut log {
        log.flush()?;
    }
    Ok(())
}

/// Reads the losses of the pending updates back in one transfer, writes their log lines, and
/// enforces the NaN policy. Returns the latest finite loss.
fn report(
    run: &mut Run,
    pending: &mut Vec<(u64, f64, Option<f64>)>,
    mut log: Option<&mut Log>,
    on_nan: OnNan,
    skipped: &mut u64,
) -> Result<f32> {
    let first = run.trainer.first_step();
    let epochs: Vec<u64> = pending
        .iter()
        .map(|&(step, _, _)| run.epoch_of(step))
        .collect();
    // Borrowed, not copied: the history grows with the run and only its tail is new.
    let losses = run.trainer.losses()?;
    let mut last = f32::NAN;
    for (&(step, lr, momentum), &epoch) in pending.iter().zip(&epochs) {
        let loss = losses[(step - first) as usize];
        if !loss.is_finite() && on_nan == OnNan::Stop {
            return Err(NonFiniteLoss(format!(
                "the loss of update {step} (epoch {epoch}) is {loss}; stopping (the last checkpoint is intact; --on-nan skip skips such updates)"
            ))
            .into());
        }
        if let Some(log) = log.as_deref_mut() {
            let line = LogLine::Update {
                step,
                epoch,
                lr,
                loss: loss.is_finite().then_some(loss),
                momentum,
            };
            log.write(&line)?;
        }
        if loss.is_finite() {
            last = loss;
        } else {
            *skipped += 1;
        }
    }
    pending.clear();
    Ok(last)
}

/// A checkpoint, with the log on disk first: a resume from it finds every line up to it (and
/// cuts what came after, `kept_on_resume`).
fn checkpoint(run: &mut Run, dir: &Path, log: Option<&mut Log>) -> Result<()> {
    if let Some(log) = log {
        log.sync()?;
    }
    Ok(run.checkpoint(dir)?)
}

/// The log line saying how many updates were skipped, after the last update done.
fn skipped_line(run: &Run, skipped: u64) -> LogLine {
    let at = run.steps_done().saturating_sub(1);
    LogLine::Skipped {
        step: at,
        epoch: run.epoch_of(at),
        skipped_updates: skipped,
    }
}

fn write_evaluation(
    log: Option<&mut Log>,
    step: u64,
    epoch: u64,
    e: &Evaluation,
    end_of_run: bool,
) -> Result<()> {
    let line = LogLine::Evaluation {
        step,
        epoch,
        val_loss: e.loss,
        val_accuracy: e.accuracy,
        end_of_run,
    };
    write_line(log, &line)
}

fn write_line(log: Option<&mut Log>, line: &LogLine) -> Result<()> {
    match log {
        Some(log) => log.write(line),
        None => Ok(()),
    }
}

/// The run stopped at a loss that is not finite (`--on-nan stop`): the error that explains a
/// failure after it.
#[derive(Debug)]
struct NonFiniteLoss(String);

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonFiniteLoss {}

/// The `--log` file: every failure to write it names it.
struct Log {
    path: std::path::PathBuf,
    out: BufWriter<File>,
}

impl Log {
    fn write(&mut self, line: &LogLine) -> Result<()> {
        writeln!(self.out, "{}", line.to_json())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Everything written so far on the disk (see `checkpoint`).
    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Every file the run will replace, checked before any update: a run is never lost to an
/// output that could not be written. (The log is opened before the first update anyway, and
/// may be a stream such as /dev/stdout.)
fn check_outputs(args: &TrainArgs, data_files: &[std::path::PathBuf]) -> Result<()> {
    if args.checkpoint_every == 0 {
        bail!("--checkpoint-every must be at least 1");
    }
    if args.resume.is_some() && args.init.is_some() {
        bail!("--init and --resume are exclusive: a resumed run continues from its checkpoint");
    }
    if let (Some(resume), Some(dir)) = (&args.resume, &args.checkpoint_dir)
        && same_path(resume, dir) != Some(true)
    {
        bail!(
            "--resume {} writes its checkpoints there; --checkpoint-dir {} would be ignored (give one of them)",
            resume.display(),
            dir.display()
        );
    }
    // No output may be another output or an input: `--log run.toml` would truncate the run
    // file, `--save DIR/checkpoint.safetensors` replace the checkpoint.
    let checkpoint = checkpoint_dir(args).map(kiln::run::checkpoint::path);
    let outputs: Vec<(&str, &Path)> = [
        ("--save", args.save.as_deref()),
        ("--save-best", args.save_best.as_deref()),
        ("--log", args.log.as_deref()),
        ("the checkpoint", checkpoint.as_deref()),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.map(|p| (n, p)))
    .collect();
    let inputs: Vec<(&str, &Path)> = [
        ("the run file", args.run.as_deref()),
        ("--init", args.init.as_deref()),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.map(|p| (n, p)))
    .chain(
        data_files
            .iter()
            .map(|p| ("a data file of the run", p.as_path())),
    )
    .collect();
    for (i, (name, path)) in outputs.iter().enumerate() {
        for (other, other_path) in outputs[i + 1..].iter().chain(&inputs) {
            if same_path(path, other_path) == Some(true) {
                bail!(
                    "{name} {} is also {other}: give it a file of its own",
                    path.display()
                );
            }
        }
    }
    for path in [&args.save, &args.save_best].into_iter().flatten() {
        kiln::weights::check_writable(path)?;
    }
    if let Some(dir) = &args.checkpoint_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        kiln::weights::check_writable(&kiln::run::checkpoint::path(dir))?;
    }
    if let Some(dir) = &args.resume
        && !kiln::run::checkpoint::path(dir).is_file()
    {
        bail!(
            "{}: no checkpoint to resume from (expected {})",
            dir.display(),
            kiln::run::checkpoint::FILE
        );
    }
    Ok(())
}

/// Where the run's checkpoints go: the directory it resumes from, else `--checkpoint-dir`.
fn checkpoint_dir(args: &TrainArgs) -> Option<&Path> {
    args.resume.as_deref().or(args.checkpoint_dir.as_deref())
}

/// Whether two paths name the same file, the second possibly not existing yet (compared by
/// its canonical directory and name); two existing files by identity too, so that a hard
/// link is the file it links. `None` when that cannot be told.
fn same_path(a: &Path, b: &Path) -> Option<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b))
            && ma.dev() == mb.dev()
            && ma.ino() == mb.ino()
        {
            return Some(true);
        }
    }
    let canonical = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .or_else(|| {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
            })
            // Neither exists yet (a checkpoint directory made later): compare as written.
            .or_else(|| std::path::absolute(p).ok())
    };
    Some(canonical(a)? == canonical(b)?)
}
