//! The rate limiter's error.

use std::fmt;
use std::time::Duration;

/// The call was over the rate and its turn was further away than the allowed wait. Detect
/// it with `err.is::<RateLimited>()`; [`retry_after`](Self::retry_after) suits a
/// `Retry-After` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    pub(super) fn new(retry_after: Duration) -> Self {
        RateLimited { retry_after }
    }

    /// How long until a call would be admitted.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit reached; retry in {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}
