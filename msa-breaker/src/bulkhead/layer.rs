use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Layer;

use super::error::BulkheadFull;
use super::{Bulkhead, BulkheadConfig};

/// A [`Layer`] that limits concurrent calls; every service it wraps shares its slots.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    slots: Arc<Semaphore>,
    config: Arc<BulkheadConfig>,
}

impl BulkheadLayer {
    /// Reports the bulkhead's slots as `name` in
    /// `resilience4j_bulkhead_available_concurrent_calls` and
    /// `…_max_allowed_concurrent_calls`.
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        crate::metrics::bulkhead(name.into(), &self.slots, self.config.max_concurrent_calls);
        self
    }

    /// Takes a slot for one call, for callers that drive calls themselves: at once, or
    /// within `max-wait-duration`, else [`BulkheadFull`]. The slot is given back when the
    /// permit drops.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, BulkheadFull> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let full = || BulkheadFull::new(&self.config);
        if self.config.max_wait_duration.is_zero() {
            return Err(full());
        }
        match tokio::time::timeout(
            self.config.max_wait_duration,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(full()),
        }
    }

    /// A bulkhead with `max-concurrent-calls` slots.
    pub fn new(config: BulkheadConfig) -> Self {
        BulkheadLayer {
            slots: Arc::new(Semaphore::new(config.max_concurrent_calls as usize)),
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            slots: Arc::clone(&self.slots),
            config: Arc::clone(&self.config),
        }
    }
}
