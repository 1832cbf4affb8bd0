//! Exponential backoff, shared by the breaker's open-state wait and retry's wait.

use std::time::Duration;

/// `base × multiplier^(step − 1)`, at most `max`: the wait before step `step` (1 for the
/// first, which waits `base`).
pub(crate) fn exponential(base: Duration, multiplier: f64, step: u32, max: Duration) -> Duration {
    if step <= 1 {
        return base;
    }
    let factor = multiplier.powi(i32::try_from(step - 1).unwrap_or(i32::MAX));
    let wait = base.as_secs_f64() * factor;
    if wait.is_finite() && wait < max.as_secs_f64() {
        Duration::from_secs_f64(wait)
    } else {
        max
    }
}
