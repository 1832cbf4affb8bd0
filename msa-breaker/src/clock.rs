//! The time source of msa's resilience layers.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// Which clock a layer reads.
///
/// - [`ClockSource::Coarse`] (the default) reads a timestamp that a background thread
///   refreshes every millisecond, so measuring a call costs two atomic loads instead of two
///   system calls: the reason msa's breaker adds nanoseconds, not tens of them. Durations are
///   exact to about a millisecond, which is far below any sensible slow-call threshold.
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
    Coarse(quanta::Instant),
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

/// The refresh interval of the coarse clock.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(1);

fn start_upkeep() {
    static UPKEEP: OnceLock<Option<quanta::Handle>> = OnceLock::new();
    UPKEEP.get_or_init(|| match quanta::Upkeep::new(UPKEEP_INTERVAL).start() {
        Ok(handle) => Some(handle),
        Err(error) => {
            // Without the thread, `recent()` reads the clock itself: slower, still right.
            tracing::warn!(%error, "msa-breaker: coarse clock thread not started");
            None
        }
    });
}

impl Clock {
    pub(crate) fn new(source: ClockSource) -> Self {
        match source {
            ClockSource::Coarse => {
                start_upkeep();
                Clock::Coarse(quanta::Instant::recent())
            }
            ClockSource::Tokio => Clock::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Nanoseconds since this clock's epoch.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let elapsed = match self {
            Clock::Coarse(epoch) => quanta::Instant::recent().saturating_duration_since(*epoch),
            Clock::Tokio(epoch) => tokio::time::Instant::now().saturating_duration_since(*epoch),
        };
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Nanoseconds in a [`Duration`], saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
