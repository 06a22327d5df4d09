//! Medians of repeated runs: how `kiln bench` and the matmul tuner time things.

use crate::error::Result;

/// The median of `v` (the upper one for an even count). `v` must not be empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` `warmup` times unmeasured, then `reps` times, returning the median of what it
/// reports.
pub(crate) fn measure(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let times = (0..reps).map(|_| f()).collect::<Result<Vec<_>>>()?;
    Ok(median(times))
}
