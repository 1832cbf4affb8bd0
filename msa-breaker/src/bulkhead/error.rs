//! The bulkhead's error.

use std::fmt;
use std::time::Duration;

use super::BulkheadConfig;

/// Every slot was taken (for longer than the allowed wait). Detect it with
/// `err.is::<BulkheadFull>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadFull {
    max_concurrent_calls: u32,
    max_wait: Duration,
}

impl BulkheadFull {
    pub(super) fn new(config: &BulkheadConfig) -> Self {
        BulkheadFull {
            max_concurrent_calls: config.max_concurrent_calls,
            max_wait: config.max_wait_duration,
        }
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead full: {} calls already running (waited {:?})",
            self.max_concurrent_calls, self.max_wait
        )
    }
}

impl std::error::Error for BulkheadFull {}
