//! Sliding windows: a ring with a running total, O(1) per call, lock-free.
//!
//! The count-based window keeps one byte per slot (the outcome it holds) and the four totals
//! (calls, failures, slow calls, slow failures) packed as 16-bit fields of one `AtomicU64`.
//! Recording claims a slot with one `fetch_add`, swaps the new outcome in, and adds
//! `new - old` to the packed totals with one `fetch_add`: the swap returns exactly what the
//! slot held, so concurrent recorders can never corrupt the totals, and every read of the
//! totals is a consistent snapshot. When the slot already holds the new outcome (a success
//! replacing a success, the steady state of a healthy downstream) nothing changes, and the
//! call costs the one `fetch_add` that claims the slot.
//!
//! The time-based window keeps one bucket per second and signed running totals. A recorder
//! that is first into a new second clears the buckets of the seconds that left the window
//! and subtracts what they held. Under concurrency a call recorded exactly at a second
//! boundary may land in the neighbouring second; totals are clamped at zero while a clearing
//! races an addition.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use super::config::{CircuitBreakerConfig, SlidingWindowType};

/// The counts a window holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    pub(crate) slow_failures: u64,
}

/// One outcome to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl Sample {
    fn code(self) -> u8 {
        1 | (self.failure as u8) << 1 | (self.slow as u8) << 2
    }
}

/// A slot code (0 for empty) as packed totals: 16 bits each for calls, failures, slow,
/// slow failures.
fn packed(code: u8) -> u64 {
    let call = u64::from(code & 1);
    let failure = u64::from(code >> 1 & 1);
    let slow = u64::from(code >> 2 & 1);
    call | failure << 16 | slow << 32 | (failure & slow) << 48
}

fn unpack(totals: u64) -> Totals {
    Totals {
        calls: totals & 0xffff,
        failures: totals >> 16 & 0xffff,
        slow: totals >> 32 & 0xffff,
        slow_failures: totals >> 48,
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(config: &CircuitBreakerConfig) -> Self {
        let size = config.sliding_window_size.max(1) as usize;
        match config.sliding_window_type {
            SlidingWindowType::CountBased => Window::Count(CountWindow::new(size)),
            SlidingWindowType::TimeBased => Window::Time(TimeWindow::new(size)),
        }
    }

    /// Whether a window built from `config` would have this one's shape.
    pub(crate) fn fits(&self, config: &CircuitBreakerConfig) -> bool {
        let size = config.sliding_window_size as usize;
        match (self, config.sliding_window_type) {
            (Window::Count(w), SlidingWindowType::CountBased) => w.slots.len() == size,
            (Window::Time(w), SlidingWindowType::TimeBased) => w.buckets.len() == size,
            _ => false,
        }
    }

    /// Records one outcome at `now` (nanoseconds) and returns the totals after it.
    #[inline]
    pub(crate) fn record(&self, sample: Sample, now: u64) -> Totals {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => w.record(sample, now / 1_000_000_000),
        }
    }

    /// The totals at `now`.
    pub(crate) fn totals(&self, now: u64) -> Totals {
        match self {
            Window::Count(w) => unpack(w.totals.load(Ordering::Acquire)),
            Window::Time(w) => {
                w.advance(now / 1_000_000_000);
                w.totals()
            }
        }
    }

    /// Every outcome ever recorded in this window.
    pub(crate) fn recorded(&self) -> u64 {
        match self {
            Window::Count(w) => w.next.load(Ordering::Relaxed),
            Window::Time(w) => w.recorded.load(Ordering::Relaxed),
        }
    }

    /// Forgets every outcome (the cumulative count stays).
    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

// === impl CountWindow ===

#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// `u64::MAX / len + 1`, for reducing the cursor modulo `len` without a division.
    reducer: u64,
    next: AtomicU64,
    totals: AtomicU64,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        let len = size.clamp(1, u32::MAX as usize) as u64;
        CountWindow {
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            reducer: (u64::MAX / len).wrapping_add(1),
            next: AtomicU64::new(0),
            totals: AtomicU64::new(0),
        }
    }

    /// `cursor mod len` for a 32-bit cursor, by Lemire's fastmod: two multiplications
    /// instead of a 64-bit division on every call.
    #[inline]
    fn slot(&self, cursor: u32) -> usize {
        let low = self.reducer.wrapping_mul(u64::from(cursor));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    fn record(&self, sample: Sample) -> Totals {
        // The cursor's low 32 bits pick the slot; at their wrap one slot is reused early,
        // which the swap below keeps exact.
        let cursor = self.next.fetch_add(1, Ordering::Relaxed) as u32;
        let code = sample.code();
        let slot = &self.slots[self.slot(cursor)];
        // The usual case once the window is full: the slot already holds this outcome, so
        // nothing changes. A writer racing for the same slot then simply comes after us.
        if slot.load(Ordering::Acquire) == code {
            return unpack(self.totals.load(Ordering::Acquire));
        }
        let old = slot.swap(code, Ordering::AcqRel);
        let delta = packed(code).wrapping_sub(packed(old));
        let before = self.totals.fetch_add(delta, Ordering::AcqRel);
        unpack(before.wrapping_add(delta))
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::AcqRel);
            self.totals.fetch_sub(packed(old), Ordering::AcqRel);
        }
    }
}

// === impl TimeWindow ===

#[derive(Debug, Default)]
struct Counts {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
    slow_failures: AtomicI64,
}

impl Counts {
    fn add(&self, sample: Sample) {
        self.calls.fetch_add(1, Ordering::AcqRel);
        if sample.failure {
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
        if sample.slow {
            self.slow.fetch_add(1, Ordering::AcqRel);
            if sample.failure {
                self.slow_failures.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Zeroes these counts and subtracts what they held from `totals`.
    fn drain_into(&self, totals: &Counts) {
        for (mine, total) in [
            (&self.calls, &totals.calls),
            (&self.failures, &totals.failures),
            (&self.slow, &totals.slow),
            (&self.slow_failures, &totals.slow_failures),
        ] {
            let held = mine.swap(0, Ordering::AcqRel);
            if held != 0 {
                total.fetch_sub(held, Ordering::AcqRel);
            }
        }
    }

    fn snapshot(&self) -> Totals {
        let read = |c: &AtomicI64| u64::try_from(c.load(Ordering::Acquire)).unwrap_or(0);
        Totals {
            calls: read(&self.calls),
            failures: read(&self.failures),
            slow: read(&self.slow),
            slow_failures: read(&self.slow_failures),
        }
    }
}

#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Counts]>,
    /// One past the newest second the window has moved to (0: none yet).
    head: AtomicU64,
    totals: Counts,
    recorded: AtomicU64,
}

impl TimeWindow {
    fn new(seconds: usize) -> Self {
        TimeWindow {
            buckets: (0..seconds).map(|_| Counts::default()).collect(),
            head: AtomicU64::new(0),
            totals: Counts::default(),
            recorded: AtomicU64::new(0),
        }
    }

    /// Moves the window to end at second `now`, clearing the seconds that left it.
    fn advance(&self, now: u64) {
        let len = self.buckets.len() as u64;
        let mut head = self.head.load(Ordering::Acquire);
        while head <= now {
            match self.head.compare_exchange_weak(
                head,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Seconds head..=now are new; their buckets still hold seconds that are
                    // now out of the window (at most `len` of them).
                    let first = head.max((now + 1).saturating_sub(len));
                    for second in first..=now {
                        self.buckets[(second % len) as usize].drain_into(&self.totals);
                    }
                    return;
                }
                Err(actual) => head = actual,
            }
        }
    }

    fn record(&self, sample: Sample, now: u64) -> Totals {
        self.advance(now);
        self.recorded.fetch_add(1, Ordering::Relaxed);
        self.buckets[(now % self.buckets.len() as u64) as usize].add(sample);
        self.totals.add(sample);
        self.totals.snapshot()
    }

    fn totals(&self) -> Totals {
        self.totals.snapshot()
    }

    fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.drain_into(&self.totals);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const S: Sample = Sample {
        failure: false,
        slow: false,
    };
    const F: Sample = Sample {
        failure: true,
        slow: false,
    };
    const SLOW_F: Sample = Sample {
        failure: true,
        slow: true,
    };

    #[test]
    fn fastmod_agrees_with_the_remainder() {
        for len in [1usize, 2, 3, 7, 100, 101, 4096, 65_535] {
            let w = CountWindow::new(len);
            for cursor in (0..5_000u32).chain([u32::MAX - 3, u32::MAX - 2, u32::MAX - 1, u32::MAX])
            {
                assert_eq!(w.slot(cursor), cursor as usize % len, "{cursor} mod {len}");
            }
        }
    }

    #[test]
    fn count_window_keeps_the_last_n_outcomes() {
        let w = CountWindow::new(3);
        assert_eq!(w.record(F).failures, 1);
        w.record(S);
        let t = w.record(SLOW_F);
        assert_eq!(
            t,
            Totals {
                calls: 3,
                failures: 2,
                slow: 1,
                slow_failures: 1
            }
        );
        // The first failure leaves the window.
        let t = w.record(S);
        assert_eq!(
            t,
            Totals {
                calls: 3,
                failures: 1,
                slow: 1,
                slow_failures: 1
            }
        );
        w.reset();
        assert_eq!(unpack(w.totals.load(Ordering::Relaxed)), Totals::default());
        assert_eq!(w.next.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn time_window_forgets_seconds_that_left_it() {
        let w = TimeWindow::new(3);
        w.record(F, 10);
        w.record(S, 10);
        w.record(S, 11);
        assert_eq!(w.record(S, 12).calls, 4);
        // Second 10 leaves at 13.
        let t = w.record(S, 13);
        assert_eq!((t.calls, t.failures), (3, 0));
        // A long quiet spell empties it.
        w.advance(100);
        assert_eq!(w.totals(), Totals::default());
        assert_eq!(w.record(F, 100).failures, 1);
    }

    /// The naive model: the list of (second, sample) still inside the window.
    struct Model {
        count: Option<usize>,
        seconds: u64,
        entries: VecDeque<(u64, Sample)>,
    }

    impl Model {
        fn record(&mut self, sample: Sample, second: u64) -> Totals {
            self.entries.push_back((second, sample));
            match self.count {
                Some(n) => {
                    while self.entries.len() > n {
                        self.entries.pop_front();
                    }
                }
                None => self.entries.retain(|(s, _)| s + self.seconds > second),
            }
            self.entries
                .iter()
                .fold(Totals::default(), |mut t, (_, s)| {
                    t.calls += 1;
                    t.failures += s.failure as u64;
                    t.slow += s.slow as u64;
                    t.slow_failures += (s.failure && s.slow) as u64;
                    t
                })
        }
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (any::<bool>(), any::<bool>()).prop_map(|(failure, slow)| Sample { failure, slow })
    }

    proptest! {
        /// Over any sequence of calls, the count-based window's totals equal those of a
        /// list that keeps the last N outcomes.
        #[test]
        fn count_window_matches_the_model(size in 1usize..40, samples in proptest::collection::vec(sample(), 0..300)) {
            let window = CountWindow::new(size);
            let mut model = Model { count: Some(size), seconds: 0, entries: VecDeque::new() };
            for s in samples {
                prop_assert_eq!(window.record(s), model.record(s, 0));
            }
        }

        /// Over any sequence of calls at non-decreasing seconds (with gaps, long ones too),
        /// the time-based window's totals equal those of a list that keeps the outcomes of
        /// the last N seconds.
        #[test]
        fn time_window_matches_the_model(
            seconds in 1usize..20,
            steps in proptest::collection::vec((0u64..4, prop_oneof![9 => Just(0u64), 1 => 0u64..60], sample()), 0..300),
        ) {
            let window = TimeWindow::new(seconds);
            let mut model = Model { count: None, seconds: seconds as u64, entries: VecDeque::new() };
            let mut now = 1_000u64;
            for (tick, jump, s) in steps {
                now += tick + jump;
                prop_assert_eq!(window.record(s, now), model.record(s, now));
            }
        }
    }
}
