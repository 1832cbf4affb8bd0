//! The circuit breaker's configuration, with Resilience4j's property names and defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::ClockSource;

/// How the sliding window counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlidingWindowType {
    /// The last `sliding-window-size` calls.
    #[default]
    CountBased,
    /// The calls of the last `sliding-window-size` seconds.
    TimeBased,
}

/// The state a breaker starts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialState {
    /// Normal operation.
    #[default]
    Closed,
    /// Always permits, records nothing.
    Disabled,
    /// Permits and records, never opens.
    MetricsOnly,
    /// Always rejects.
    ForcedOpen,
}

/// A circuit breaker's settings; the defaults are Resilience4j's.
///
/// Deserializes from kebab-case keys named like Resilience4j's properties; durations take
/// `500ms`, `30s`, `2m` or a bare number of milliseconds, as Spring Boot does:
///
/// ```
/// use std::time::Duration;
/// use msa_breaker::circuit_breaker::{CircuitBreakerConfig, SlidingWindowType};
///
/// let config: CircuitBreakerConfig = serde_json::from_value(serde_json::json!({
///     "sliding-window-type": "TIME_BASED",
///     "sliding-window-size": 10,
///     "failure-rate-threshold": 25,
///     "wait-duration-in-open-state": "30s",
/// })).unwrap();
/// assert_eq!(config.sliding_window_type, SlidingWindowType::TimeBased);
/// assert_eq!(config.wait_duration_in_open_state, Duration::from_secs(30));
/// assert_eq!(config.minimum_number_of_calls, 100); // Resilience4j's default
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// `COUNT_BASED` (default) or `TIME_BASED`.
    pub sliding_window_type: SlidingWindowType,
    /// Calls (count-based) or seconds (time-based) in the window; 100.
    pub sliding_window_size: u32,
    /// No decision before this many calls are in the window (capped at the window size
    /// when count-based); 100.
    pub minimum_number_of_calls: u32,
    /// Open at or above this failure percentage; 50.
    pub failure_rate_threshold: f32,
    /// Open at or above this percentage of slow calls; 100.
    pub slow_call_rate_threshold: f32,
    /// A call slower than this is slow; 60 s.
    #[serde(with = "msa_core::duration")]
    pub slow_call_duration_threshold: Duration,
    /// Probes admitted while half-open; the rest are rejected; 10.
    pub permitted_number_of_calls_in_half_open_state: u32,
    /// How long the breaker stays open before probing; 60 s.
    #[serde(with = "msa_core::duration")]
    pub wait_duration_in_open_state: Duration,
    /// Grow the open-state wait with each consecutive opening; false.
    pub enable_exponential_backoff: bool,
    /// The growth factor of the open-state wait per consecutive opening; 1.5.
    pub exponential_backoff_multiplier: f64,
    /// The longest open-state wait with backoff; 10 min.
    #[serde(with = "msa_core::duration")]
    pub exponential_max_wait_duration_in_open_state: Duration,
    /// Move from open to half-open when the wait is over, without waiting for a call; false.
    pub automatic_transition_from_open_to_half_open_enabled: bool,
    /// Reopen if the probes have not all finished within this time; 0 waits for them.
    #[serde(with = "msa_core::duration")]
    pub max_wait_duration_in_half_open_state: Duration,
    /// The state the breaker starts in; `CLOSED`.
    pub initial_state: InitialState,
    /// The clock the breaker reads; see [`ClockSource`].
    pub clock: ClockSource,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            sliding_window_type: SlidingWindowType::CountBased,
            sliding_window_size: 100,
            minimum_number_of_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_threshold: Duration::from_secs(60),
            permitted_number_of_calls_in_half_open_state: 10,
            wait_duration_in_open_state: Duration::from_secs(60),
            enable_exponential_backoff: false,
            exponential_backoff_multiplier: 1.5,
            exponential_max_wait_duration_in_open_state: Duration::from_secs(600),
            automatic_transition_from_open_to_half_open_enabled: false,
            max_wait_duration_in_half_open_state: Duration::ZERO,
            initial_state: InitialState::Closed,
            clock: ClockSource::Coarse,
        }
    }
}

/// The largest count-based window, and the most probes in half-open.
pub const MAX_COUNT: u32 = u16::MAX as u32;
/// The longest time-based window, in seconds.
pub const MAX_WINDOW_SECONDS: u32 = 3600;

/// A setting out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("circuit breaker setting {key}: {reason}")]
pub struct InvalidConfig {
    /// The property, as written in config files.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        key,
        reason: reason.into(),
    }
}

impl CircuitBreakerConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let max_window = match self.sliding_window_type {
            SlidingWindowType::CountBased => MAX_COUNT,
            SlidingWindowType::TimeBased => MAX_WINDOW_SECONDS,
        };
        if !(1..=max_window).contains(&self.sliding_window_size) {
            return Err(invalid(
                "sliding-window-size",
                format!(
                    "{} is not within 1..={max_window}",
                    self.sliding_window_size
                ),
            ));
        }
        if self.minimum_number_of_calls == 0 {
            return Err(invalid("minimum-number-of-calls", "must be at least 1"));
        }
        for (key, rate) in [
            ("failure-rate-threshold", self.failure_rate_threshold),
            ("slow-call-rate-threshold", self.slow_call_rate_threshold),
        ] {
            if !(rate > 0.0 && rate <= 100.0) {
                return Err(invalid(
                    key,
                    format!("{rate} is not a percentage in (0, 100]"),
                ));
            }
        }
        if !(1..=MAX_COUNT).contains(&self.permitted_number_of_calls_in_half_open_state) {
            return Err(invalid(
                "permitted-number-of-calls-in-half-open-state",
                format!(
                    "{} is not within 1..={MAX_COUNT}",
                    self.permitted_number_of_calls_in_half_open_state
                ),
            ));
        }
        if !(self.exponential_backoff_multiplier >= 1.0
            && self.exponential_backoff_multiplier.is_finite())
        {
            return Err(invalid(
                "exponential-backoff-multiplier",
                format!(
                    "{} is not a finite number of at least 1",
                    self.exponential_backoff_multiplier
                ),
            ));
        }
        Ok(())
    }

    /// The minimum number of calls as applied: capped at the window size when count-based.
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        match self.sliding_window_type {
            SlidingWindowType::CountBased => {
                self.minimum_number_of_calls.min(self.sliding_window_size)
            }
            SlidingWindowType::TimeBased => self.minimum_number_of_calls,
        }
    }

    /// The open-state wait after `openings` consecutive openings (1 for the first).
    pub(crate) fn wait_in_open_state(&self, openings: u32) -> Duration {
        if !self.enable_exponential_backoff {
            return self.wait_duration_in_open_state;
        }
        msa_core::backoff::exponential(
            self.wait_duration_in_open_state,
            self.exponential_backoff_multiplier,
            openings,
            self.exponential_max_wait_duration_in_open_state,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_resilience4j_defaults() {
        let config: CircuitBreakerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, CircuitBreakerConfig::default());
        assert_eq!(config.sliding_window_size, 100);
        assert_eq!(config.minimum_number_of_calls, 100);
        assert_eq!(config.failure_rate_threshold, 50.0);
        assert_eq!(config.slow_call_rate_threshold, 100.0);
        assert_eq!(config.slow_call_duration_threshold, Duration::from_secs(60));
        assert_eq!(config.permitted_number_of_calls_in_half_open_state, 10);
        assert_eq!(config.wait_duration_in_open_state, Duration::from_secs(60));
        assert!(!config.automatic_transition_from_open_to_half_open_enabled);
        assert_eq!(config.max_wait_duration_in_half_open_state, Duration::ZERO);
        config.validate().unwrap();
    }

    #[test]
    fn durations_read_like_spring_boot() {
        let config: CircuitBreakerConfig = serde_json::from_value(serde_json::json!({
            "wait-duration-in-open-state": 2500,
            "slow-call-duration-threshold": "1m 30s",
            "max-wait-duration-in-half-open-state": "750",
        }))
        .unwrap();
        assert_eq!(
            config.wait_duration_in_open_state,
            Duration::from_millis(2500)
        );
        assert_eq!(config.slow_call_duration_threshold, Duration::from_secs(90));
        assert_eq!(
            config.max_wait_duration_in_half_open_state,
            Duration::from_millis(750)
        );
        let back: CircuitBreakerConfig =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = serde_json::from_value::<CircuitBreakerConfig>(serde_json::json!({
            "wait-duration-in-open-state": "soon"
        }))
        .unwrap_err();
        assert!(error.to_string().contains("soon"), "{error}");
        let error = serde_json::from_value::<CircuitBreakerConfig>(serde_json::json!({
            "failure-rate": 10
        }))
        .unwrap_err();
        assert!(error.to_string().contains("failure-rate"), "{error}");

        let config = CircuitBreakerConfig {
            failure_rate_threshold: 0.0,
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "failure-rate-threshold");
        let config = CircuitBreakerConfig {
            sliding_window_size: 70_000,
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "sliding-window-size");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = CircuitBreakerConfig {
            wait_duration_in_open_state: Duration::from_secs(10),
            enable_exponential_backoff: true,
            exponential_backoff_multiplier: 2.0,
            exponential_max_wait_duration_in_open_state: Duration::from_secs(60),
            ..Default::default()
        };
        let waits: Vec<_> = (1..=5)
            .map(|n| config.wait_in_open_state(n).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert_eq!(config.wait_in_open_state(u32::MAX), Duration::from_secs(60));
    }
}
