//! The generic cell rate algorithm on one atomic: lock-free admission at a steady rate with
//! a burst. msa's one implementation: the rate limiter layer's, and the gateway's
//! RequestRateLimiter buckets (which take several tokens a call).
//!
//! ```
//! use msa_breaker::rate_limit::gcra::{Decision, Gcra, Rate};
//!
//! // 10 tokens a second, a burst of 20; times in nanoseconds on the caller's clock.
//! let (cell, rate) = (Gcra::new(), Rate::tokens(10, 20));
//! assert_eq!(cell.decide_n(rate, 15, 0), Decision::Now);
//! assert_eq!(cell.available(rate, 0), 5);
//! assert!(matches!(cell.decide_n(rate, 6, 0), Decision::Rejected { .. }));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::{Clock, nanos};

use super::RateLimiterConfig;

/// Admission decisions at `limit-for-period` calls per `limit-refresh-period`, allowing a
/// burst of `limit-for-period`.
///
/// The state is the theoretical arrival time (TAT) of the next call, in nanoseconds on the
/// limiter's clock. A call at `now` is admitted when `TAT - now <= tolerance`, and moves TAT
/// one emission interval on; compare-and-swap keeps concurrent callers exact.
#[derive(Debug, Default)]
pub struct Gcra {
    tat: AtomicU64,
}

/// The rate, precomputed.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Nanoseconds between calls at the steady rate.
    interval: u64,
    /// How far ahead of `now` TAT may run: `period - interval`, the burst.
    tolerance: u64,
    /// The longest a call may wait for its turn.
    max_wait: u64,
}

impl Rate {
    /// `per_second` tokens a second, at most `burst` at once, never waiting (a token
    /// bucket's terms; both at least 1).
    pub fn tokens(per_second: u64, burst: u64) -> Self {
        let interval = (1_000_000_000 / per_second.max(1)).max(1);
        Rate {
            interval,
            tolerance: interval.saturating_mul(burst.max(1)) - interval,
            max_wait: 0,
        }
    }

    pub(super) fn new(config: &RateLimiterConfig) -> Self {
        let period = nanos(config.limit_refresh_period).max(1);
        let limit = u64::from(config.limit_for_period.max(1));
        let interval = (period / limit).max(1);
        Rate {
            interval,
            tolerance: period.saturating_sub(interval),
            max_wait: nanos(config.timeout_duration),
        }
    }
}

/// What the limiter says to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go now.
    Now,
    /// Go after this many nanoseconds (the turn is reserved).
    After(u64),
    /// Over the rate, and the turn is further away than the allowed wait.
    Rejected {
        /// Nanoseconds until the call would have its turn.
        next_in: u64,
    },
}

impl Gcra {
    /// A cell with its whole burst available.
    pub fn new() -> Self {
        Gcra {
            tat: AtomicU64::new(0),
        }
    }

    /// One call at `now` (nanoseconds on the caller's clock).
    #[inline]
    pub fn decide(&self, rate: Rate, now: u64) -> Decision {
        self.decide_n(rate, 1, now)
    }

    /// A call that takes `cost` turns at once (at least 1) at `now`.
    #[inline]
    pub fn decide_n(&self, rate: Rate, cost: u64, now: u64) -> Decision {
        let step = rate.interval.saturating_mul(cost.max(1));
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            let next = start.saturating_add(step);
            let wait = next.saturating_sub(now + rate.tolerance + rate.interval);
            if wait > rate.max_wait {
                return Decision::Rejected { next_in: wait };
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if wait == 0 => return Decision::Now,
                Ok(_) => return Decision::After(wait),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Calls that may start at `now` without waiting.
    pub fn available(&self, rate: Rate, now: u64) -> i64 {
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let room = (now + rate.tolerance + rate.interval).saturating_sub(tat);
        (room / rate.interval) as i64
    }

    /// Whether this cell is no different from a fresh one at `now` (so it can be dropped).
    pub fn idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now
    }

    /// When the cell's whole burst is available again (its theoretical arrival time):
    /// the earlier, the less a cell holds that a fresh one would not.
    pub fn full_at(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}

/// The limiter's clock and rate, shared by keyed and unkeyed limiters.
#[derive(Debug)]
pub(super) struct Limits {
    pub(super) clock: Clock,
    pub(super) rate: Rate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(limit: u32, period_ms: u64, wait_ms: u64) -> Rate {
        Rate::new(&RateLimiterConfig {
            limit_for_period: limit,
            limit_refresh_period: Duration::from_millis(period_ms),
            timeout_duration: Duration::from_millis(wait_ms),
            ..Default::default()
        })
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_of_the_limit_then_the_steady_rate() {
        let (g, r) = (Gcra::new(), rate(5, 1000, 0));
        let t = 10_000 * MS;
        for _ in 0..5 {
            assert_eq!(g.decide(r, t), Decision::Now);
        }
        assert_eq!(g.decide(r, t), Decision::Rejected { next_in: 200 * MS });
        // One call per 200 ms after that.
        assert_eq!(
            g.decide(r, t + 199 * MS),
            Decision::Rejected { next_in: MS }
        );
        assert_eq!(g.decide(r, t + 200 * MS), Decision::Now);
        assert!(matches!(
            g.decide(r, t + 200 * MS),
            Decision::Rejected { .. }
        ));
        // A quiet second refills the burst.
        let later = t + 1200 * MS;
        for _ in 0..5 {
            assert_eq!(g.decide(r, later), Decision::Now);
        }
        assert!(g.idle(later + 1000 * MS));
    }

    #[test]
    fn a_caller_that_may_wait_gets_a_reserved_turn() {
        let (g, r) = (Gcra::new(), rate(2, 1000, 600));
        let t = 10_000 * MS;
        assert_eq!(g.decide(r, t), Decision::Now);
        assert_eq!(g.decide(r, t), Decision::Now);
        assert_eq!(g.decide(r, t), Decision::After(500 * MS));
        // The next turn is 1000 ms away, beyond the 600 ms wait.
        assert_eq!(g.decide(r, t), Decision::Rejected { next_in: 1000 * MS });
    }
}
