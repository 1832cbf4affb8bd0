use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use tower::Layer;

use super::gcra::{Gcra, Limits, Rate};
use super::{Cells, KeyFn, RateLimiter, RateLimiterConfig, Shared, Unkeyed};
use crate::clock::Clock;

/// A [`Layer`] that limits the rate of calls; every service it wraps shares its rate.
pub struct RateLimiterLayer<K = (), F = Unkeyed> {
    shared: Arc<Shared<K>>,
    key: F,
}

impl<K, F: Clone> Clone for RateLimiterLayer<K, F> {
    fn clone(&self) -> Self {
        RateLimiterLayer {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
        }
    }
}

impl<K, F> std::fmt::Debug for RateLimiterLayer<K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiterLayer").finish_non_exhaustive()
    }
}

fn limits(config: &RateLimiterConfig) -> Limits {
    Limits {
        clock: Clock::new(config.clock),
        rate: Rate::new(config),
    }
}

impl RateLimiterLayer {
    /// One rate for every call.
    pub fn new(config: RateLimiterConfig) -> Self {
        RateLimiterLayer {
            shared: Arc::new(Shared {
                limits: limits(&config),
                cells: Cells::One(Gcra::new()),
                waiting: Default::default(),
            }),
            key: Unkeyed,
        }
    }

    /// Reports the limiter as `name` in `resilience4j_ratelimiter_available_permissions`
    /// and `…_waiting_threads`.
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        let shared: Arc<dyn crate::metrics::Permissions> = self.shared.clone();
        crate::metrics::rate_limiter(name.into(), Arc::downgrade(&shared));
        self
    }

    /// Waits for a permission for one call, for callers that drive calls themselves: at
    /// once, after a wait within `timeout-duration`, else [`RateLimited`](super::error::RateLimited).
    pub async fn acquire(&self) -> Result<(), super::error::RateLimited> {
        self.shared.acquire().await
    }

    /// One rate per key: `key` picks it from the request (a client address, an API key, a
    /// tenant); requests it gives no key for are not limited.
    pub fn keyed<Req, K, F>(config: RateLimiterConfig, key: F) -> RateLimiterLayer<K, KeyFn<F>>
    where
        K: Hash + Eq,
        F: Fn(&Req) -> Option<K> + Clone,
    {
        RateLimiterLayer {
            shared: Arc::new(Shared {
                limits: limits(&config),
                cells: Cells::Keyed(DashMap::new()),
                waiting: Default::default(),
            }),
            key: KeyFn(key),
        }
    }
}

impl<S, K, F: Clone> Layer<S> for RateLimiterLayer<K, F> {
    type Service = RateLimiter<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimiter {
            inner,
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
        }
    }
}
