//! The time source of msa's resilience layers.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which clock a layer reads.
///
/// - [`ClockSource::Coarse`] (the default) reads a timestamp that one background thread
///   (`msa-coarse-clock`) refreshes every millisecond, so timing a call costs two atomic
///   loads instead of two clock reads (about 28 ns each on a virtual machine). Durations are
///   exact to about a millisecond, far below any sensible slow-call threshold.
/// - [`ClockSource::Tokio`] reads [`tokio::time::Instant`], so tests can drive every
///   time-based transition with `tokio::time::pause()` and `advance()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// A millisecond-resolution timestamp refreshed by a background thread.
    #[default]
    Coarse,
    /// `tokio::time::Instant`, which follows `tokio::time::pause()`.
    Tokio,
}

/// A clock with its own epoch; [`Clock::now`] is nanoseconds since the clock was made.
#[derive(Clone, Copy)]
pub(crate) enum Clock {
    /// The coarse clock's reading at the epoch.
    Coarse(u64),
    Tokio(tokio::time::Instant),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Clock::Coarse(_) => "Clock::Coarse",
            Clock::Tokio(_) => "Clock::Tokio",
        })
    }
}

/// How often the coarse clock is refreshed.
const TICK: Duration = Duration::from_millis(1);

/// Nanoseconds since the coarse clock started, refreshed every [`TICK`] by one thread.
static COARSE_NANOS: AtomicU64 = AtomicU64::new(0);

/// Starts the coarse clock's thread once per process and returns its current reading.
fn coarse_start() -> u64 {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    let origin = *STARTED.get_or_init(|| {
        let origin = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("msa-coarse-clock".into())
            .spawn(move || {
                loop {
                    COARSE_NANOS.store(nanos(origin.elapsed()), Ordering::Release);
                    std::thread::sleep(TICK);
                }
            });
        if let Err(error) = spawned {
            // Without the thread, the clock stands still: slow calls are not detected
            // and open-state waits never end, so say so loudly.
            tracing::error!(%error, "msa-breaker: the coarse clock thread did not start");
        }
        origin
    });
    let reading = nanos(origin.elapsed());
    COARSE_NANOS.fetch_max(reading, Ordering::AcqRel);
    reading
}

impl Clock {
    pub(crate) fn new(source: ClockSource) -> Self {
        match source {
            ClockSource::Coarse => Clock::Coarse(coarse_start()),
            ClockSource::Tokio => Clock::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Nanoseconds since this clock's epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::Coarse(epoch) => COARSE_NANOS.load(Ordering::Acquire).saturating_sub(*epoch),
            Clock::Tokio(epoch) => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*epoch))
            }
        }
    }
}

/// Nanoseconds in a [`Duration`], saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
