//! Retry: try a failed call again, with exponential backoff and jitter, only where that is
//! safe, and never beyond a budget.
//!
//! - **Which results**: those the [`Classify`](crate::Classify) calls failures (errors;
//!   with [`HttpStatus`](crate::HttpStatus), 5xx and 429).
//! - **Which requests**: those the [`Replay`] can replay and deems idempotent. For HTTP,
//!   [`HttpReplay`] retries only `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE` and `TRACE`
//!   unless `retry-non-idempotent` is set, and needs a body it can clone.
//! - **When**: after `wait-duration`, growing by `exponential-backoff-multiplier` per
//!   attempt up to `exponential-max-wait-duration` when backoff is on, spread by
//!   ±`randomized-wait-factor` when randomized; and never sooner than a `Retry-After` the
//!   response asked for (a `Retry-After` longer than `max-retry-after` means no retry).
//! - **How many**: at most `max-attempts` calls in all, and only while the **retry budget**
//!   allows: retries may add at most `budget.retry-percent` percent to the calls of the
//!   last `budget.ttl`, plus `budget.min-retries-per-second`, so that retries cannot
//!   multiply an outage (Finagle's and Envoy's rule, through tower's `TpsBudget`). Every
//!   service a layer wraps shares its budget.
//!
//! Defaults are Resilience4j's, except that the wait is randomized by default.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use msa_breaker::retry::{RetryConfig, RetryLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let svc = RetryLayer::new(RetryConfig::default()).layer(tower::service_fn(move |_: ()| {
//!     let n = c.fetch_add(1, Ordering::SeqCst);
//!     async move { if n < 2 { Err("flaky".into()) } else { Ok::<_, msa_breaker::BoxError>("ok") } }
//! }));
//! assert_eq!(svc.oneshot(()).await.unwrap(), "ok");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```

mod layer;
mod policy;

pub use self::layer::RetryLayer;
pub use self::policy::{CloneRequest, HttpReplay, Replay, RetryPolicy};

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Retry settings; Resilience4j's names, plus the budget and HTTP rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryConfig {
    /// Calls in all, the first included; 3.
    pub max_attempts: u32,
    /// The wait before the first retry; 500 ms.
    #[serde(with = "msa_core::duration")]
    pub wait_duration: Duration,
    /// Grow the wait with each retry; false.
    pub enable_exponential_backoff: bool,
    /// The growth factor per retry; 1.5.
    pub exponential_backoff_multiplier: f64,
    /// The longest wait with backoff; 30 s.
    #[serde(with = "msa_core::duration")]
    pub exponential_max_wait_duration: Duration,
    /// Spread each wait at random, so that clients do not retry in step; **true** (unlike
    /// Resilience4j).
    pub enable_randomized_wait: bool,
    /// The spread: a wait `w` becomes uniform in `w ± factor × w`; 0.5.
    pub randomized_wait_factor: f64,
    /// Retry requests that are not idempotent (HTTP `POST`, `PATCH`); false.
    pub retry_non_idempotent: bool,
    /// Never retry sooner than a `Retry-After` asks; true.
    pub honor_retry_after: bool,
    /// Give up instead of waiting for a `Retry-After` longer than this; 30 s.
    #[serde(with = "msa_core::duration")]
    pub max_retry_after: Duration,
    /// The retry budget.
    pub budget: RetryBudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            wait_duration: Duration::from_millis(500),
            enable_exponential_backoff: false,
            exponential_backoff_multiplier: 1.5,
            exponential_max_wait_duration: Duration::from_secs(30),
            enable_randomized_wait: true,
            randomized_wait_factor: 0.5,
            retry_non_idempotent: false,
            honor_retry_after: true,
            max_retry_after: Duration::from_secs(30),
            budget: RetryBudgetConfig::default(),
        }
    }
}

/// How many retries the calls of the recent past buy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// How long a call counts toward the budget (1 s to 60 s); 10 s.
    #[serde(with = "msa_core::duration")]
    pub ttl: Duration,
    /// Retries allowed per second whatever the traffic; 10.
    pub min_retries_per_second: u32,
    /// Retries allowed as a percentage of calls; 20.
    pub retry_percent: f32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ttl: Duration::from_secs(10),
            min_retries_per_second: 10,
            retry_percent: 20.0,
        }
    }
}

/// A retry setting out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("retry setting {key}: {reason}")]
pub struct InvalidRetryConfig {
    /// The property.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl RetryConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), InvalidRetryConfig> {
        let invalid = |key, reason: String| Err(InvalidRetryConfig { key, reason });
        if self.max_attempts == 0 {
            return invalid("max-attempts", "must be at least 1".into());
        }
        if !(self.exponential_backoff_multiplier >= 1.0
            && self.exponential_backoff_multiplier.is_finite())
        {
            return invalid(
                "exponential-backoff-multiplier",
                format!(
                    "{} is not a finite number of at least 1",
                    self.exponential_backoff_multiplier
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.randomized_wait_factor) {
            return invalid(
                "randomized-wait-factor",
                format!("{} is not within 0..=1", self.randomized_wait_factor),
            );
        }
        let b = &self.budget;
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&b.ttl) {
            return invalid("budget.ttl", format!("{:?} is not within 1s..=60s", b.ttl));
        }
        if !(0.0..=1000.0).contains(&b.retry_percent) {
            return invalid(
                "budget.retry-percent",
                format!("{} is not within 0..=1000", b.retry_percent),
            );
        }
        if b.min_retries_per_second >= i32::MAX as u32 {
            return invalid("budget.min-retries-per-second", "is too large".into());
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1 for the first), before randomizing.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        if !self.enable_exponential_backoff {
            return self.wait_duration;
        }
        msa_core::backoff::exponential(
            self.wait_duration,
            self.exponential_backoff_multiplier,
            retry,
            self.exponential_max_wait_duration,
        )
    }
}
