//! What the balancer knows about one instance: requests in flight, peak-EWMA latency,
//! failures in a row and ejection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) pending: AtomicU32,
    ewma: Mutex<Ewma>,
    consecutive_failures: AtomicU32,
    /// Ejected while the balancer's clock (ms since its epoch) is below this.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

#[derive(Debug)]
struct Ewma {
    cost_ns: f64,
    stamp: Instant,
}

impl Stats {
    pub(crate) fn new(initial_cost: Duration, now: Instant) -> Self {
        Stats {
            pending: AtomicU32::new(0),
            ewma: Mutex::new(Ewma {
                cost_ns: initial_cost.as_nanos() as f64,
                stamp: now,
            }),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// The latency estimate now, decayed toward zero since the last observation, as
    /// Finagle's and tower's peak-EWMA do, so an instance nobody chose gets tried again.
    pub(crate) fn cost_ns(&self, now: Instant, decay: Duration) -> f64 {
        let ewma = msa_core::sync::lock(&self.ewma);
        ewma.cost_ns * weight(now.saturating_duration_since(ewma.stamp), decay)
    }

    /// Cost × (requests in flight + 1): what P2C compares.
    pub(crate) fn load(&self, now: Instant, decay: Duration) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed) as f64;
        self.cost_ns(now, decay) * (pending + 1.0)
    }

    /// Records one latency: a slower one than the estimate replaces it at once (the peak),
    /// a faster one is averaged in with a weight that grows with the time since the last.
    pub(crate) fn observe(&self, now: Instant, rtt: Duration, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let mut ewma = msa_core::sync::lock(&self.ewma);
        if rtt > ewma.cost_ns {
            ewma.cost_ns = rtt;
        } else {
            let w = weight(now.saturating_duration_since(ewma.stamp), decay);
            ewma.cost_ns = ewma.cost_ns * w + rtt * (1.0 - w);
        }
        ewma.stamp = now;
    }

    pub(crate) fn is_ejected(&self, clock_ms: u64) -> bool {
        clock_ms < self.ejected_until.load(Ordering::Relaxed)
    }

    /// A success: failures in a row start over; an instance that has stayed back for a
    /// base ejection time has its next ejection shortened by one step.
    pub(crate) fn succeeded(&self, clock_ms: u64, base: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) > 0 {
            let until = self.ejected_until.load(Ordering::Relaxed);
            if clock_ms >= until.saturating_add(base.as_millis() as u64) {
                // Decrement once per base time back; the CAS keeps concurrent successes
                // from decrementing twice for the same period.
                let _ = self.ejected_until.compare_exchange(
                    until,
                    clock_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let _ = self
                    .ejections
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }

    /// A failure; returns the failures in a row so far.
    pub(crate) fn failed(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejects the instance (unless another caller just did); returns how long for.
    pub(crate) fn eject(&self, clock_ms: u64, base: Duration, max: Duration) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if clock_ms < until {
            return None;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(ejections).min(max);
        let new_until = clock_ms + length.as_millis() as u64;
        self.ejected_until
            .compare_exchange(until, new_until, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Some(length)
    }
}

fn weight(elapsed: Duration, decay: Duration) -> f64 {
    let decay = decay.as_nanos().max(1) as f64;
    (-(elapsed.as_nanos() as f64) / decay).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn peak_is_taken_at_once_and_decays() {
        let now = Instant::now();
        let stats = Stats::new(Duration::from_millis(1), now);
        stats.observe(now, Duration::from_millis(50), DECAY);
        assert_eq!(stats.cost_ns(now, DECAY), 50e6);
        // A fast answer right after barely moves the estimate...
        stats.observe(
            now + Duration::from_millis(1),
            Duration::from_millis(1),
            DECAY,
        );
        assert!(stats.cost_ns(now + Duration::from_millis(1), DECAY) > 49e6);
        // ...but time does: one time constant later the cost is down to ~37 %.
        let later = now + Duration::from_millis(1) + DECAY;
        let cost = stats.cost_ns(later, DECAY);
        assert!((cost / 50e6 - (-1f64).exp()).abs() < 0.01, "{cost}");
    }

    #[test]
    fn load_counts_requests_in_flight() {
        let now = Instant::now();
        let stats = Stats::new(Duration::from_millis(2), now);
        stats.pending.store(3, Ordering::Relaxed);
        assert_eq!(stats.load(now, DECAY), 8e6);
    }

    #[test]
    fn ejections_grow_and_shrink() {
        let now = Instant::now();
        let stats = Stats::new(Duration::from_millis(2), now);
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(300);
        assert_eq!(stats.eject(0, base, max), Some(base));
        assert!(stats.is_ejected(29_999));
        assert_eq!(stats.eject(1_000, base, max), None, "already ejected");
        assert!(!stats.is_ejected(30_000));
        assert_eq!(stats.eject(30_000, base, max), Some(base * 2));
        // Back at 90 s, healthy for a base time: the next ejection is one step shorter.
        stats.succeeded(90_000 + 30_000, base);
        assert_eq!(stats.eject(200_000, base, max), Some(base * 2));
    }
}
