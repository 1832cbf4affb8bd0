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
