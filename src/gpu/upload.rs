//! How a batch from the host reaches staging memory: checked (every value finite) and copied a
//! run at a time, on one thread or shared out over several of rayon's pool.
//!
//! One thread reads memory at a fraction of a server's bandwidth (13 GB/s on the H200 machine's
//! host: a 3.2 MB batch took 353 µs to check and copy), so a large batch may go faster on
//! several. Whether it does depends on the host: on this project's 2-core VM two threads were
//! slower (3.2 MB: 150 against 177 µs, `examples/upload_paths.rs`). So a context measures, for
//! each size of write (within a factor of two): its first writes of that size alternate between
//! one thread and several, and after [`SAMPLES`] of each it keeps the faster. The values
//! written are the same either way.

use std::sync::Mutex;

use crate::error::Result;

/// Values checked and copied at a time: a few KiB, still in cache for the copy after the check.
pub const CHECK_RUN: usize = 1024;

/// Bytes each thread of a shared-out write takes at least: below it, handing work to another
/// thread costs more than the copy is likely to gain.
pub const BYTES_PER_THREAD: usize = 256 << 10;

/// The most threads a write is shared out over: a host's memory bandwidth is reached by a few
/// cores.
pub const MAX_THREADS: usize = 8;

/// Timed writes of each kind before the choice.
pub const SAMPLES: usize = 8;

/// Threads a shared-out write of `len` floats uses: one per [`BYTES_PER_THREAD`], up to
/// rayon's pool and [`MAX_THREADS`]. 1: too small to share.
pub fn parallel_threads(len: usize) -> usize {
    let by_size = len.saturating_mul(4) / BYTES_PER_THREAD;
    if by_size < 2 {
        // Asking rayon starts its pool: a small write never needs it.
        return 1;
    }
    by_size
        .min(rayon::current_num_threads())
        .clamp(1, MAX_THREADS)
}

/// Checks `values` (the floats from index `at` of `what`) are finite and copies them into
/// `staging`, on `threads` threads, each taking a contiguous share of whole runs. The first
/// value that is not finite is named, whichever thread found it.
pub(crate) fn check_and_copy_on(
    values: &[f32],
    staging: wgpu::WriteOnly<'_, [u8]>,
    at: usize,
    what: &str,
    threads: usize,
) -> Result<()> {
    if threads <= 1 {
        return check_and_copy(values, staging, at, what);
    }
    // Each whole run's staging on its own: a fixed-size `WriteOnly` can go to another thread.
    let (runs, tail) = staging.into_chunks::<{ CHECK_RUN * 4 }>();
    let runs: Vec<_> = values
        .chunks_exact(CHECK_RUN)
        .zip(runs)
        .enumerate()
        .map(|(r, (run, staging))| (at + r * CHECK_RUN, run, staging))
        .collect();
    let whole = runs.len() * CHECK_RUN;
    use rayon::prelude::*;
    let failed = runs
        .into_par_iter()
        .with_min_len((whole / CHECK_RUN).div_ceil(threads).max(1))
        .map(|(from, run, staging)| check_and_copy(run, staging.into(), from, what))
        .find_first(Result::is_err);
    if let Some(e) = failed {
        return e;
    }
    check_and_copy(&values[whole..], tail, at + whole, what)
}

/// [`check_and_copy_on`] on the calling thread.
fn check_and_copy(
    values: &[f32],
    mut staging: wgpu::WriteOnly<'_, [u8]>,
    at: usize,
    what: &str,
) -> Result<()> {
    for (r, run) in values.chunks(CHECK_RUN).enumerate() {
        if !crate::ops::all_finite(run) {
            crate::ops::check_finite_at(what, run, at + r * CHECK_RUN)?;
        }
        let from = r * CHECK_RUN * 4;
        staging
            .slice(from..from + run.len() * 4)
            .copy_from_slice(bytemuck::cast_slice(run));
    }
    Ok(())
}

/// A context's choice between one thread and several, per size of write (its length's highest
/// power of two).
#[derive(Default)]
pub(crate) struct WriteThreads {
    sizes: Mutex<std::collections::HashMap<u32, State>>,
}

#[derive(Default)]
struct State {
    /// Seconds of the writes timed so far: on one thread, shared out.
    single: Vec<f64>,
    shared: Vec<f64>,
    chosen: Option<bool>,
}

/// How the next large write goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Shared out (`true`) or not, for good.
    Chosen(bool),
    /// Shared out or not, to be timed and [`WriteThreads::record`]ed.
    Measure(bool),
}

impl WriteThreads {
    /// How the next write of `len` floats goes.
    pub(crate) fn pick(&self, len: usize) -> Pick {
        let mut sizes = self
            .sizes
            .lock()
            .expect("the write choice lock is never poisoned");
        let state = sizes.entry(len.max(1).ilog2()).or_default();
        match state.chosen {
            Some(shared) => Pick::Chosen(shared),
            // Alternating, so that a drift in the host's speed touches both alike.
            None => Pick::Measure(state.shared.len() < state.single.len()),
        }
    }

    /// One timed write of `len` floats; after [`SAMPLES`] of each kind for its size the faster
    /// median is kept (shared out only if at least a tenth faster: the simpler path wins a
    /// tie). `threads` is what the shared-out writes used, for the log.
    pub(crate) fn record(&self, len: usize, shared: bool, seconds: f64, threads: usize) {
        let mut sizes = self
            .sizes
            .lock()
            .expect("the write choice lock is never poisoned");
        let state = sizes.entry(len.max(1).ilog2()).or_default();
        if state.chosen.is_some() {
            return;
        }
        if shared {
            state.shared.push(seconds);
        } else {
            state.single.push(seconds);
        }
        if state.single.len() >= SAMPLES && state.shared.len() >= SAMPLES {
            let (one, many) = (median(&state.single), median(&state.shared));
            let choice = many < 0.9 * one;
            let how = if choice {
                "several threads"
            } else {
                "one thread"
            };
            log::info!(
                "host batches of about {} KiB: checked and copied on {how} (one thread {:.0} \
                 µs, {threads} threads {:.0} µs, medians of {SAMPLES})",
                (len * 4) >> 10,
                one * 1e6,
                many * 1e6
            );
            state.chosen = Some(choice);
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(single: f64, shared: f64) -> Vec<Pick> {
        let choice = WriteThreads::default();
        let mut picks = Vec::new();
        for _ in 0..3 * SAMPLES {
            let pick = choice.pick(1 << 20);
            picks.push(pick);
            if let Pick::Measure(s) = pick {
                choice.record(1 << 20, s, if s { shared } else { single }, 4);
            }
        }
        // Another size is measured on its own.
        assert_eq!(choice.pick(1 << 22), Pick::Measure(false));
        picks
    }

    /// The first writes alternate between the two kinds, `SAMPLES` each, then the faster one
    /// stays; shared out only where it is a tenth faster.
    #[test]
    fn the_faster_way_is_kept_after_alternating() {
        let picks = measure(100e-6, 50e-6);
        for (i, pick) in picks[..2 * SAMPLES].iter().enumerate() {
            assert_eq!(*pick, Pick::Measure(i % 2 == 1), "write {i}");
        }
        assert!(
            picks[2 * SAMPLES..]
                .iter()
                .all(|&p| p == Pick::Chosen(true))
        );
        let picks = measure(100e-6, 95e-6);
        assert!(
            picks[2 * SAMPLES..]
                .iter()
                .all(|&p| p == Pick::Chosen(false))
        );
        let picks = measure(100e-6, 150e-6);
        assert!(
            picks[2 * SAMPLES..]
                .iter()
                .all(|&p| p == Pick::Chosen(false))
        );
    }

    #[test]
    fn small_writes_stay_on_one_thread() {
        assert_eq!(parallel_threads(0), 1);
        assert_eq!(parallel_threads(BYTES_PER_THREAD / 4), 1);
        assert!(parallel_threads(usize::MAX) <= MAX_THREADS);
    }
}
