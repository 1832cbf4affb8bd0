//! A doubling delay between attempts at something that keeps failing: reconnecting a
//! watch, accepting connections when file descriptors have run out.
//!
//! ```
//! use std::time::Duration;
//! use msa_core::backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! assert_eq!(backoff.next_delay(), Duration::from_millis(200));
//! for _ in 0..10 {
//!     backoff.next_delay();
//! }
//! assert_eq!(backoff.next_delay(), Duration::from_secs(1));
//! backoff.reset();
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

/// `first`, then twice the last delay, at most `max`; back to `first` after
/// [`reset`](Self::reset).
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `first` doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the one after it is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Sleeps for [`next_delay`](Self::next_delay).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: the next delay is `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `base × multiplier^(step − 1)`, at most `max`: the wait before step `step` (1 for the
/// first, which waits `base`) — Resilience4j's and Spring Retry's exponential backoff.
///
/// ```
/// use std::time::Duration;
/// use msa_core::backoff::exponential;
///
/// let base = Duration::from_millis(100);
/// assert_eq!(exponential(base, 2.0, 1, Duration::from_secs(1)), base);
/// assert_eq!(exponential(base, 2.0, 3, Duration::from_secs(1)), Duration::from_millis(400));
/// assert_eq!(exponential(base, 2.0, 30, Duration::from_secs(1)), Duration::from_secs(1));
/// ```
pub fn exponential(base: Duration, multiplier: f64, step: u32, max: Duration) -> Duration {
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
