//! The breaker itself: state machine, window, permits, events and metrics.

use msa_core::sync::lock;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::config::{CircuitBreakerConfig, InitialState, InvalidConfig};
use super::error::CircuitOpen;
use super::window::{Sample, Totals, Window};
use crate::classify::Outcome;
use crate::clock::{Clock, nanos};

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Calls pass and are recorded; the breaker opens when a threshold is reached.
    Closed,
    /// Calls are rejected until the wait in open state is over.
    Open,
    /// A limited number of probe calls pass; their outcome closes or reopens the breaker.
    HalfOpen,
    /// Calls pass and nothing is recorded.
    Disabled,
    /// Calls pass and are recorded, but the breaker never opens.
    MetricsOnly,
    /// Every call is rejected.
    ForcedOpen,
}

impl State {
    /// All states.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::Disabled,
        State::MetricsOnly,
        State::ForcedOpen,
    ];

    /// The Resilience4j name (`CLOSED`, `HALF_OPEN`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::Disabled => "DISABLED",
            State::MetricsOnly => "METRICS_ONLY",
            State::ForcedOpen => "FORCED_OPEN",
        }
    }

    const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::MetricsOnly => 4,
            State::ForcedOpen => 5,
        }
    }

    const fn from_code(code: u64) -> State {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            4 => State::MetricsOnly,
            _ => State::ForcedOpen,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened in a breaker, as its [event stream](CircuitBreaker::events) reports it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The state changed.
    StateTransition {
        /// The breaker's name.
        name: Arc<str>,
        /// The state before.
        from: State,
        /// The state after.
        to: State,
    },
    /// A call was rejected.
    NotPermitted {
        /// The breaker's name.
        name: Arc<str>,
        /// The state that rejected it.
        state: State,
    },
    /// The failure rate reached its threshold.
    FailureRateExceeded {
        /// The breaker's name.
        name: Arc<str>,
        /// The failure rate, in percent.
        rate: f32,
    },
    /// The slow-call rate reached its threshold.
    SlowCallRateExceeded {
        /// The breaker's name.
        name: Arc<str>,
        /// The slow-call rate, in percent.
        rate: f32,
    },
    /// The breaker was reset to a closed, empty state.
    Reset {
        /// The breaker's name.
        name: Arc<str>,
    },
}

/// A breaker's numbers at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Failure rate in percent over the window, `None` below the minimum number of calls.
    pub failure_rate: Option<f32>,
    /// Slow-call rate in percent over the window, `None` below the minimum number of calls.
    pub slow_call_rate: Option<f32>,
    /// Calls in the window.
    pub buffered_calls: u64,
    /// Failed calls in the window.
    pub buffered_failed_calls: u64,
    /// Slow calls in the window.
    pub buffered_slow_calls: u64,
    /// Successful calls since the breaker was made.
    pub successful_calls: u64,
    /// Failed calls since the breaker was made.
    pub failed_calls: u64,
    /// Ignored calls since the breaker was made.
    pub ignored_calls: u64,
    /// Rejected calls since the breaker was made.
    pub not_permitted_calls: u64,
}

// The state word: state (3 bits) | generation (32 bits) | half-open permits left (16 bits).
const STATE_BITS: u64 = 0b111;
const GEN_SHIFT: u32 = 3;
const GEN_MASK: u64 = 0xffff_ffff;
const PERMITS_SHIFT: u32 = 35;
const PERMITS_MASK: u64 = 0xffff;

fn word(state: State, generation: u64, permits: u64) -> u64 {
    state.code() | (generation & GEN_MASK) << GEN_SHIFT | (permits & PERMITS_MASK) << PERMITS_SHIFT
}
fn state_of(word: u64) -> State {
    State::from_code(word & STATE_BITS)
}
fn generation_of(word: u64) -> u64 {
    word >> GEN_SHIFT & GEN_MASK
}
fn permits_of(word: u64) -> u64 {
    word >> PERMITS_SHIFT & PERMITS_MASK
}

// The half-open tally: generation (16 bits) | probes done | failures | slow (16 bits each).
fn tally(generation: u64) -> u64 {
    (generation & 0xffff) << 48
}

/// The thresholds read on every recorded call, kept in atomics so that new config applies
/// to a live breaker without a lock.
#[derive(Debug)]
struct Thresholds {
    minimum_calls: AtomicU64,
    /// Failure rate threshold in thousandths of a percent.
    failure_rate: AtomicU64,
    /// Slow-call rate threshold in thousandths of a percent.
    slow_call_rate: AtomicU64,
    slow_call_nanos: AtomicU64,
    half_open_permits: AtomicU64,
    /// `max-wait-duration-in-half-open-state` in nanoseconds; 0 waits for the probes.
    half_open_max_nanos: AtomicU64,
}

fn milli_percent(rate: f32) -> u64 {
    (f64::from(rate) * 1000.0).round() as u64
}

impl Thresholds {
    fn new(config: &CircuitBreakerConfig) -> Self {
        let t = Thresholds {
            minimum_calls: AtomicU64::new(0),
            failure_rate: AtomicU64::new(0),
            slow_call_rate: AtomicU64::new(0),
            slow_call_nanos: AtomicU64::new(0),
            half_open_permits: AtomicU64::new(0),
            half_open_max_nanos: AtomicU64::new(0),
        };
        t.set(config);
        t
    }

    fn set(&self, config: &CircuitBreakerConfig) {
        self.minimum_calls.store(
            u64::from(config.effective_minimum_calls()),
            Ordering::Relaxed,
        );
        self.failure_rate.store(
            milli_percent(config.failure_rate_threshold),
            Ordering::Relaxed,
        );
        self.slow_call_rate.store(
            milli_percent(config.slow_call_rate_threshold),
            Ordering::Relaxed,
        );
        self.slow_call_nanos.store(
            nanos(config.slow_call_duration_threshold),
            Ordering::Relaxed,
        );
        self.half_open_permits.store(
            u64::from(config.permitted_number_of_calls_in_half_open_state),
            Ordering::Relaxed,
        );
        self.half_open_max_nanos.store(
            nanos(config.max_wait_duration_in_half_open_state),
            Ordering::Relaxed,
        );
    }

    #[inline]
    /// Which threshold `calls` outcomes with these failures and slow calls reach, if any.
    fn exceeded(&self, calls: u64, failures: u64, slow: u64) -> Option<Exceeded> {
        // Thresholds are above zero: a clean window never exceeds them.
        if calls == 0 || (failures == 0 && slow == 0) {
            return None;
        }
        if failures * 100_000 >= self.failure_rate.load(Ordering::Relaxed) * calls {
            return Some(Exceeded::FailureRate(rate(failures, calls)));
        }
        if slow * 100_000 >= self.slow_call_rate.load(Ordering::Relaxed) * calls {
            return Some(Exceeded::SlowCallRate(rate(slow, calls)));
        }
        None
    }
}

fn rate(part: u64, calls: u64) -> f32 {
    (part as f64 * 100.0 / calls as f64) as f32
}

#[derive(Clone, Copy, Debug)]
enum Exceeded {
    FailureRate(f32),
    SlowCallRate(f32),
}

#[derive(Debug, Default)]
struct Counters {
    window_failed: AtomicU64,
    extra_successful: AtomicU64,
    extra_failed: AtomicU64,
    ignored: AtomicU64,
    not_permitted: AtomicU64,
}

pub(super) struct Inner {
    pub(super) name: Arc<str>,
    clock: Clock,
    state: AtomicU64,
    window: Window,
    thresholds: Thresholds,
    half_open: AtomicU64,
    half_open_since: AtomicU64,
    open_until: AtomicU64,
    openings: AtomicU32,
    counters: Counters,
    /// `resilience4j_circuitbreaker_calls_seconds`.
    pub(super) durations: super::durations::Durations,
    config: Mutex<CircuitBreakerConfig>,
    /// Held while changing state, never on the call path.
    transitions: Mutex<()>,
    events: broadcast::Sender<Event>,
}

/// A circuit breaker: Resilience4j's state machine, shared by every clone.
///
/// Layers built from one `CircuitBreaker` (or from one name in a
/// [`CircuitBreakerRegistry`](super::CircuitBreakerRegistry)) share its state, so a
/// downstream called from many places trips once.
///
/// The closed-state path takes no lock and allocates nothing: admitting a call is one
/// atomic load; recording it claims a window slot with one atomic read-modify-write, and
/// when the outcome differs from the one it replaces, swaps it in and adds the difference
/// to the packed totals (two more); the threshold checks are plain loads. Timing a call for the slow-call rate reads the
/// [coarse clock](crate::ClockSource), an atomic load, not a system call. Half-open probes
/// are admitted by compare-and-swap on the state word, so exactly
/// `permitted-number-of-calls-in-half-open-state` get through; a probe dropped before it
/// finishes gives its permit back and records nothing.
///
/// # Lifetime
///
/// A breaker lives until the process exits, like a metric series (its series stays on
/// `/actuator/prometheus` too) or an entry of Resilience4j's registry. That is what lets a
/// permit point at its breaker without reference counting, which would double the cost of
/// a call. Make one breaker per downstream, once (a
/// [`CircuitBreakerRegistry`](super::CircuitBreakerRegistry) does that by name), never one
/// per request: each costs a few hundred bytes plus its window, and msa logs a warning when
/// more than 1,024 have been made.
///
/// # Examples
///
/// ```
/// use msa_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, State};
///
/// let breaker = CircuitBreaker::new("payments", CircuitBreakerConfig::default()).unwrap();
/// assert_eq!(breaker.state(), State::Closed);
/// breaker.transition_to_forced_open();
/// assert!(breaker.try_acquire().is_err());
/// ```
#[derive(Clone, Copy)]
pub struct CircuitBreaker {
    pub(super) inner: &'static Inner,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A breaker named `name` (the `name` label of its metrics).
    pub fn new(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let initial = match config.initial_state {
            InitialState::Closed => State::Closed,
            InitialState::Disabled => State::Disabled,
            InitialState::MetricsOnly => State::MetricsOnly,
            InitialState::ForcedOpen => State::ForcedOpen,
        };
        let inner: &'static Inner = Box::leak(Box::new(Inner {
            name: name.into(),
            durations: super::durations::Durations::new(),
            clock: Clock::new(config.clock),
            state: AtomicU64::new(word(initial, 0, 0)),
            window: Window::new(&config),
            thresholds: Thresholds::new(&config),
            half_open: AtomicU64::new(tally(0)),
            half_open_since: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            openings: AtomicU32::new(0),
            counters: Counters::default(),
            config: Mutex::new(config),
            transitions: Mutex::new(()),
            events: broadcast::channel(256).0,
        }));
        super::metrics::register(inner);
        Ok(CircuitBreaker { inner })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current state.
    pub fn state(&self) -> State {
        state_of(self.inner.state.load(Ordering::Acquire))
    }

    /// The current configuration.
    pub fn config(&self) -> CircuitBreakerConfig {
        lock(&self.inner.config).clone()
    }

    /// A stream of state transitions, rejections and exceeded thresholds. Events are only
    /// produced while someone listens; a receiver that falls more than 256 events behind
    /// skips the oldest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The breaker's numbers now.
    pub fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }

    /// Applies new settings to the live breaker: thresholds, minimum calls, waits,
    /// backoff and half-open permits take effect at once, and the window keeps its calls.
    ///
    /// The window's shape (`sliding-window-type`, `sliding-window-size`) and the clock stay
    /// as the breaker was built: a live breaker never drops its window, and keeping the
    /// window fixed is what lets calls reach it without any indirection. A new shape is
    /// logged and kept out of [`config`](Self::config); it applies to a breaker built anew.
    /// An invalid config changes nothing.
    pub fn update_config(&self, config: CircuitBreakerConfig) -> Result<(), InvalidConfig> {
        config.validate()?;
        let mut current = lock(&self.inner.config);
        let (window_type, window_size) = (current.sliding_window_type, current.sliding_window_size);
        if !self.inner.window.fits(&config) {
            tracing::warn!(
                breaker = %self.inner.name,
                "sliding-window-type/size apply to a new breaker; this one keeps its {window_size}-{} {:?} window",
                if window_type == super::SlidingWindowType::CountBased { "call" } else { "second" },
                window_type,
            );
        }
        let applied = CircuitBreakerConfig {
            sliding_window_type: window_type,
            sliding_window_size: window_size,
            clock: current.clock,
            ..config
        };
        self.inner.thresholds.set(&applied);
        *current = applied;
        Ok(())
    }

    /// Asks to make one call: a permit when the state allows it, [`CircuitOpen`] when not.
    ///
    /// The permit must be completed with [`Permit::complete`]; dropping it instead
    /// records nothing (and gives a half-open probe back).
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        self.acquire()
            .map_err(|state| CircuitOpen::new(Arc::clone(&self.inner.name), state))
    }

    /// [`try_acquire`](Self::try_acquire) without building the error: the rejecting state.
    #[inline]
    pub(super) fn acquire(&self) -> Result<Permit, State> {
        let kind = self.inner.try_acquire()?;
        let start_ms = match kind {
            PermitKind::Free => 0,
            _ => millis(self.inner.clock.now()),
        };
        Ok(Permit {
            inner: self.inner,
            ticket: kind.ticket(start_ms),
        })
    }

    /// Closes the breaker with an empty window.
    pub fn transition_to_closed(&self) {
        self.inner.force(State::Closed);
    }

    /// Opens the breaker (for the wait in open state).
    pub fn transition_to_open(&self) {
        self.inner.force(State::Open);
    }

    /// Half-opens the breaker.
    pub fn transition_to_half_open(&self) {
        self.inner.force(State::HalfOpen);
    }

    /// Permits every call and records nothing, until another transition.
    pub fn transition_to_disabled(&self) {
        self.inner.force(State::Disabled);
    }

    /// Records calls but never opens, until another transition.
    pub fn transition_to_metrics_only(&self) {
        self.inner.force(State::MetricsOnly);
    }

    /// Rejects every call, until another transition.
    pub fn transition_to_forced_open(&self) {
        self.inner.force(State::ForcedOpen);
    }

    /// Closes the breaker, empties its window and forgets consecutive openings.
    pub fn reset(&self) {
        self.inner.force(State::Closed);
        self.inner.openings.store(0, Ordering::Relaxed);
        self.inner.emit(|name| Event::Reset { name });
    }
}

/// A permit's generation: the low 30 bits of the state word's.
const TICKET_GEN_MASK: u64 = 0x3fff_ffff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PermitKind {
    /// DISABLED: nothing to record.
    Free,
    /// CLOSED or METRICS_ONLY in this generation (30 bits).
    Recorded(u64),
    /// A half-open probe in this generation (30 bits).
    Probe(u64),
}

impl PermitKind {
    /// Packs the kind, its generation and the call's start (milliseconds on the breaker's
    /// clock, wrapping) into one word, so a permit is two words and moves in registers.
    fn ticket(self, start_ms: u32) -> u64 {
        let (tag, generation) = match self {
            PermitKind::Free => (0, 0),
            PermitKind::Recorded(g) => (1, g),
            PermitKind::Probe(g) => (2, g),
        };
        tag | (generation & TICKET_GEN_MASK) << 2 | u64::from(start_ms) << 32
    }

    fn of(ticket: u64) -> (PermitKind, u32) {
        let generation = ticket >> 2 & TICKET_GEN_MASK;
        let kind = match ticket & 0b11 {
            1 => PermitKind::Recorded(generation),
            2 => PermitKind::Probe(generation),
            _ => PermitKind::Free,
        };
        (kind, (ticket >> 32) as u32)
    }
}

/// Milliseconds (wrapping at 2^32, about 49 days) of a clock reading in nanoseconds.
#[inline]
fn millis(nanos: u64) -> u32 {
    (nanos / 1_000_000) as u32
}

/// Whether two generations agree in the 30 bits a permit keeps.
#[inline]
fn same_generation(state_word: u64, permit_generation: u64) -> bool {
    generation_of(state_word) & TICKET_GEN_MASK == permit_generation
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`].
#[must_use = "a permit records nothing unless completed"]
pub struct Permit {
    inner: &'static Inner,
    ticket: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.inner.name)
            .field("kind", &PermitKind::of(self.ticket).0)
            .finish()
    }
}

impl Permit {
    /// Records the call's outcome.
    #[inline]
    pub fn complete(mut self, outcome: Outcome) {
        let ticket = std::mem::take(&mut self.ticket);
        let (kind, start_ms) = PermitKind::of(ticket);
        self.inner.complete(kind, outcome, start_ms);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let (PermitKind::Probe(generation), _) = PermitKind::of(self.ticket) {
            self.inner.release_probe(generation);
        }
    }
}

// === impl Inner ===

impl Inner {
    #[inline]
    fn try_acquire(&'static self) -> Result<PermitKind, State> {
        loop {
            let current = self.state.load(Ordering::Acquire);
            let generation = generation_of(current);
            match state_of(current) {
                State::Closed | State::MetricsOnly => {
                    return Ok(PermitKind::Recorded(generation & TICKET_GEN_MASK));
                }
                State::Disabled => return Ok(PermitKind::Free),
                State::ForcedOpen => return Err(self.reject(State::ForcedOpen)),
                State::Open => {
                    if self.clock.now() < self.open_until.load(Ordering::Acquire) {
                        return Err(self.reject(State::Open));
                    }
                    self.transition(current, State::HalfOpen, None);
                }
                State::HalfOpen => {
                    let permits = permits_of(current);
                    if self.half_open_expired() {
                        self.transition(current, State::Open, None);
                        continue;
                    }
                    if permits == 0 {
                        return Err(self.reject(State::HalfOpen));
                    }
                    let next = word(State::HalfOpen, generation, permits - 1);
                    if self
                        .state
                        .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok(PermitKind::Probe(generation & TICKET_GEN_MASK));
                    }
                }
            }
        }
    }

    fn half_open_expired(&self) -> bool {
        let max_wait = self.thresholds.half_open_max_nanos.load(Ordering::Relaxed);
        max_wait != 0
            && self
                .clock
                .now()
                .saturating_sub(self.half_open_since.load(Ordering::Acquire))
                >= max_wait
    }

    #[cold]
    fn reject(&self, state: State) -> State {
        self.counters.not_permitted.fetch_add(1, Ordering::Relaxed);
        self.emit(|name| Event::NotPermitted { name, state });
        state
    }

    fn emit(&self, event: impl FnOnce(Arc<str>) -> Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event(Arc::clone(&self.name)));
        }
    }

    #[inline]
    fn complete(&'static self, kind: PermitKind, outcome: Outcome, start_ms: u32) {
        if !matches!(kind, PermitKind::Free) {
            let elapsed_ms = millis(self.clock.now()).wrapping_sub(start_ms);
            self.durations.record(outcome, elapsed_ms);
        }
        match kind {
            PermitKind::Free => {}
            PermitKind::Recorded(generation) => self.record(generation, outcome, start_ms),
            PermitKind::Probe(generation) => self.record_probe(generation, outcome, start_ms),
        }
    }

    /// The outcome as the window records it: a call is slow when it took longer than the
    /// threshold, to the millisecond.
    #[inline]
    fn sample(&self, outcome: Outcome, start_ms: u32, now: u64) -> Sample {
        let elapsed_ms = millis(now).wrapping_sub(start_ms);
        Sample {
            failure: outcome == Outcome::Failure,
            slow: u64::from(elapsed_ms) * 1_000_000
                > self.thresholds.slow_call_nanos.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn record(&'static self, generation: u64, outcome: Outcome, start_ms: u32) {
        if outcome == Outcome::Ignored {
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = self.clock.now();
        let sample = self.sample(outcome, start_ms, now);
        let current = self.state.load(Ordering::Acquire);
        if !same_generation(current, generation) {
            // Admitted before the last transition: it says nothing about the new state.
            self.count_extra(sample);
            return;
        }
        if sample.failure {
            self.counters.window_failed.fetch_add(1, Ordering::Relaxed);
        }
        let totals = self.window.record(sample, now);
        if state_of(current) == State::Closed
            && totals.calls >= self.thresholds.minimum_calls.load(Ordering::Relaxed)
            && let Some(exceeded) =
                self.thresholds
                    .exceeded(totals.calls, totals.failures, totals.slow)
        {
            self.transition(current, State::Open, Some(exceeded));
        }
    }

    fn count_extra(&self, sample: Sample) {
        let counter = if sample.failure {
            &self.counters.extra_failed
        } else {
            &self.counters.extra_successful
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn record_probe(&'static self, generation: u64, outcome: Outcome, start_ms: u32) {
        if outcome == Outcome::Ignored {
            // An ignored probe says nothing: its permit goes back.
            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
            self.release_probe(generation);
            return;
        }
        let now = self.clock.now();
        let sample = self.sample(outcome, start_ms, now);
        self.count_extra(sample);
        let tag = tally(generation);
        let add = 1 << 32 | u64::from(sample.failure) << 16 | u64::from(sample.slow);
        let mut current = self.half_open.load(Ordering::Acquire);
        let after = loop {
            if current & !0xffff_ffff_ffff != tag {
                return; // a probe of an earlier half-open state
            }
            match self.half_open.compare_exchange_weak(
                current,
                current + add,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break current + add,
                Err(actual) => current = actual,
            }
        };
        let done = after >> 32 & 0xffff;
        if done < self.thresholds.half_open_permits.load(Ordering::Relaxed) {
            return;
        }
        // The last probe decides.
        let state = self.state.load(Ordering::Acquire);
        if state_of(state) != State::HalfOpen || !same_generation(state, generation) {
            return;
        }
        let failures = after >> 16 & 0xffff;
        let slow = after & 0xffff;
        match self.thresholds.exceeded(done, failures, slow) {
            Some(exceeded) => self.transition(state, State::Open, Some(exceeded)),
            None => self.transition(state, State::Closed, None),
        }
    }

    fn release_probe(&self, generation: u64) {
        let mut current = self.state.load(Ordering::Acquire);
        while state_of(current) == State::HalfOpen && same_generation(current, generation) {
            let next = word(
                State::HalfOpen,
                generation_of(current),
                permits_of(current) + 1,
            );
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves from the state in `from` (same state and generation) to `to`. Does nothing if
    /// another thread moved first.
    #[cold]
    fn transition(&'static self, from: u64, to: State, cause: Option<Exceeded>) {
        let _serial = lock(&self.transitions);
        let mut current = self.state.load(Ordering::Acquire);
        if state_of(current) != state_of(from) || generation_of(current) != generation_of(from) {
            return;
        }
        if let Some(exceeded) = cause {
            self.emit(|name| match exceeded {
                Exceeded::FailureRate(rate) => Event::FailureRateExceeded { name, rate },
                Exceeded::SlowCallRate(rate) => Event::SlowCallRateExceeded { name, rate },
            });
        }
        let generation = generation_of(current).wrapping_add(1) & GEN_MASK;
        let permits = self.prepare(state_of(current), to, generation);
        let next = word(to, generation, permits);
        // Probes may still take permits from the old word: retry until the swap lands.
        while let Err(actual) =
            self.state
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
        {
            current = actual;
        }
        let from = state_of(from);
        tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state changed");
        self.emit(|name| Event::StateTransition { name, from, to });
        if to == State::Open {
            self.schedule_half_open(generation);
        }
    }

    /// Sets up what state `to` reads before it is published; returns its permits.
    fn prepare(&self, from: State, to: State, generation: u64) -> u64 {
        let config = lock(&self.config);
        match to {
            State::Open => {
                let openings = if from == State::HalfOpen {
                    self.openings.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    self.openings.store(1, Ordering::Relaxed);
                    1
                };
                let wait = config.wait_in_open_state(openings);
                self.open_until.store(
                    self.clock.now().saturating_add(nanos(wait)),
                    Ordering::Release,
                );
                0
            }
            State::HalfOpen => {
                self.half_open.store(tally(generation), Ordering::Release);
                self.half_open_since
                    .store(self.clock.now(), Ordering::Release);
                u64::from(config.permitted_number_of_calls_in_half_open_state)
            }
            State::Closed => {
                self.window.reset();
                if from == State::HalfOpen {
                    self.openings.store(0, Ordering::Relaxed);
                }
                0
            }
            State::MetricsOnly => {
                self.window.reset();
                0
            }
            State::Disabled | State::ForcedOpen => 0,
        }
    }

    fn force(&'static self, to: State) {
        let current = self.state.load(Ordering::Acquire);
        self.transition(current, to, None);
    }

    /// With automatic transition on, half-opens when the wait is over, without a call.
    fn schedule_half_open(&'static self, generation: u64) {
        if !lock(&self.config).automatic_transition_from_open_to_half_open_enabled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the next call half-opens it
        };
        let wait = self
            .open_until
            .load(Ordering::Acquire)
            .saturating_sub(self.clock.now());
        // An absolute deadline: the task may first run well after it is spawned.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_nanos(wait);
        let inner = self;
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let current = inner.state.load(Ordering::Acquire);
            if state_of(current) == State::Open && generation_of(current) == generation {
                inner.transition(current, State::HalfOpen, None);
            }
        });
    }

    pub(super) fn metrics(&self) -> Metrics {
        let state = state_of(self.state.load(Ordering::Acquire));
        let window = &self.window;
        let totals: Totals = window.totals(self.clock.now());
        let minimum = self.thresholds.minimum_calls.load(Ordering::Relaxed);
        let enough = totals.calls >= minimum && totals.calls > 0;
        let c = &self.counters;
        let window_failed = c.window_failed.load(Ordering::Relaxed);
        let recorded = window.recorded();
        Metrics {
            state,
            failure_rate: enough.then(|| rate(totals.failures, totals.calls)),
            slow_call_rate: enough.then(|| rate(totals.slow, totals.calls)),
            buffered_calls: totals.calls,
            buffered_failed_calls: totals.failures,
            buffered_slow_calls: totals.slow,
            successful_calls: recorded.saturating_sub(window_failed)
                + c.extra_successful.load(Ordering::Relaxed),
            failed_calls: window_failed + c.extra_failed.load(Ordering::Relaxed),
            ignored_calls: c.ignored.load(Ordering::Relaxed),
            not_permitted_calls: c.not_permitted.load(Ordering::Relaxed),
        }
    }
}
