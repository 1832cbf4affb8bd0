use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::Layer;

use super::{Bulkhead, BulkheadConfig};

/// A [`Layer`] that limits concurrent calls; every service it wraps shares its slots.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    slots: Arc<Semaphore>,
    config: Arc<BulkheadConfig>,
}

impl BulkheadLayer {
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
