//! Call durations by outcome, for `resilience4j_circuitbreaker_calls_seconds`.
//!
//! Recorded on the call path, so it must cost next to nothing: the breaker already knows
//! each call's start to the millisecond (for slow calls), and a call adds one to one bucket
//! counter (and its milliseconds to a sum when it took any) in a shard of its own thread.
//! Shards sit on cache lines of their own, so threads calling through one breaker do not
//! contend; a scrape adds the shards up.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::Outcome;

/// Upper bounds in milliseconds: `msa_core::metrics::DURATION_BUCKETS` to the millisecond
/// (2.5 ms reads as 2 ms), then `+Inf`.
pub(super) const BOUNDS_MS: [u32; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

const BUCKETS: usize = BOUNDS_MS.len() + 1;
const SHARDS: usize = 8;

/// Outcomes in label order: `successful`, `failed`, `ignored`.
pub(super) const KINDS: [&str; 3] = ["successful", "failed", "ignored"];

#[repr(align(64))]
#[derive(Default)]
struct Shard {
    buckets: [[AtomicU64; BUCKETS]; 3],
    sum_ms: [AtomicU64; 3],
}

/// One breaker's durations.
pub(super) struct Durations {
    shards: Box<[Shard]>,
}

/// A kind's numbers at one moment: cumulative bucket counts (the last is `+Inf`, the
/// count) and the sum in milliseconds.
pub(super) struct Totals {
    pub(super) cumulative: [u64; BUCKETS],
    pub(super) sum_ms: u64,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        let mut index = shard.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(index);
        }
        index
    })
}

impl Durations {
    pub(super) fn new() -> Self {
        Durations {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Counts a call that ended with `outcome` after `elapsed_ms`.
    #[inline]
    pub(super) fn record(&self, outcome: Outcome, elapsed_ms: u32) {
        let kind = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Ignored => 2,
        };
        let bucket = if elapsed_ms <= BOUNDS_MS[0] {
            0
        } else {
            BOUNDS_MS
                .iter()
                .position(|bound| elapsed_ms <= *bound)
                .unwrap_or(BOUNDS_MS.len())
        };
        let shard = &self.shards[shard_index()];
        shard.buckets[kind][bucket].fetch_add(1, Ordering::Relaxed);
        if elapsed_ms > 0 {
            shard.sum_ms[kind].fetch_add(u64::from(elapsed_ms), Ordering::Relaxed);
        }
    }

    /// Every kind's totals, shards added up.
    pub(super) fn totals(&self) -> [Totals; 3] {
        std::array::from_fn(|kind| {
            let mut counts = [0u64; BUCKETS];
            let mut sum_ms = 0;
            for shard in &*self.shards {
                for (count, bucket) in counts.iter_mut().zip(&shard.buckets[kind]) {
                    *count += bucket.load(Ordering::Relaxed);
                }
                sum_ms += shard.sum_ms[kind].load(Ordering::Relaxed);
            }
            let mut running = 0;
            let cumulative = counts.map(|count| {
                running += count;
                running
            });
            Totals { cumulative, sum_ms }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_is_the_count() {
        let durations = Durations::new();
        for ms in [0, 1, 2, 3, 40, 20_000] {
            durations.record(Outcome::Success, ms);
        }
        durations.record(Outcome::Failure, 7);
        let [ok, failed, ignored] = durations.totals();
        assert_eq!(ok.cumulative[0], 2, "0 and 1 ms are within 1 ms");
        assert_eq!(ok.cumulative[1], 3);
        assert_eq!(ok.cumulative[2], 4);
        assert_eq!(ok.cumulative[5], 5, "40 ms is within 50 ms");
        assert_eq!(ok.cumulative[BOUNDS_MS.len() - 1], 5);
        assert_eq!(ok.cumulative[BOUNDS_MS.len()], 6);
        assert_eq!(ok.sum_ms, 20_046);
        assert_eq!((failed.cumulative[3], failed.sum_ms), (1, 7));
        assert_eq!(ignored.cumulative[BOUNDS_MS.len()], 0);
    }
}
