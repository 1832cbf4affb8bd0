//! Rate limiter: at most `limit-for-period` calls per `limit-refresh-period`, lock-free
//! (the generic cell rate algorithm on one atomic), optionally per key.
//!
//! A call over the rate waits for its turn when that turn is within `timeout-duration`
//! (the turn is reserved, so waiting callers are served in order), and is rejected with
//! [`RateLimited`] otherwise. With [`RateLimiterLayer::keyed`], each key
//! (a client, a tenant, a route) gets its own rate.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use msa_breaker::rate_limit::{RateLimiterConfig, RateLimiterLayer, error::RateLimited};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = RateLimiterLayer::new(RateLimiterConfig {
//!     limit_for_period: 2,
//!     limit_refresh_period: Duration::from_secs(1),
//!     timeout_duration: Duration::ZERO,
//!     ..Default::default()
//! });
//! let svc = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>("ok") }));
//! assert!(svc.clone().oneshot(()).await.is_ok());
//! assert!(svc.clone().oneshot(()).await.is_ok());
//! assert!(svc.clone().oneshot(()).await.unwrap_err().is::<RateLimited>());
//! # }
//! ```

pub mod error;
pub mod gcra;
mod layer;

pub use self::layer::RateLimiterLayer;

use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tower::Service;

use self::error::RateLimited;
use self::gcra::{Decision, Gcra, Limits};
use crate::BoxError;
use crate::ClockSource;
use crate::deferred::ResponseFuture;

/// Rate limiter settings; Resilience4j's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Calls allowed per period (and the largest burst); 50.
    pub limit_for_period: u32,
    /// The period; 500 ns (Resilience4j's default: 100 million calls a second, in effect
    /// no limit until configured).
    #[serde(with = "msa_core::duration")]
    pub limit_refresh_period: Duration,
    /// How long a call over the rate may wait for its turn; 5 s. 0 rejects at once.
    #[serde(with = "msa_core::duration")]
    pub timeout_duration: Duration,
    /// The clock; [`ClockSource::Tokio`] by default, because rates of more than a thousand
    /// calls a second need better than the coarse clock's millisecond.
    pub clock: ClockSource,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        RateLimiterConfig {
            limit_for_period: 50,
            limit_refresh_period: Duration::from_nanos(500),
            timeout_duration: Duration::from_secs(5),
            clock: ClockSource::Tokio,
        }
    }
}

/// Where a limiter keeps its state: one for all calls, or one per key.
enum Cells<K> {
    One(Gcra),
    Keyed(DashMap<K, Gcra>),
}

/// Past this many keys, keys whose state is no different from a fresh one are dropped.
const SWEEP_AT: usize = 4096;

struct Shared<K> {
    limits: Limits,
    cells: Cells<K>,
    waiting: crate::metrics::Waiting,
}

impl crate::metrics::Permissions for Shared<()> {
    fn available(&self) -> i64 {
        match &self.cells {
            Cells::One(gcra) => gcra.available(self.limits.rate, self.limits.clock.now()),
            Cells::Keyed(_) => 0,
        }
    }

    fn waiting(&self) -> usize {
        self.waiting.get()
    }
}

impl Shared<()> {
    /// Waits for a permission as the layer would, for callers that drive calls themselves.
    pub(super) async fn acquire(&self) -> Result<(), RateLimited> {
        match self.decide(Some(())) {
            Decision::Now => Ok(()),
            Decision::Rejected { next_in } => Err(RateLimited::new(Duration::from_nanos(next_in))),
            Decision::After(wait) => {
                let _waiting = self.waiting.enter();
                tokio::time::sleep(Duration::from_nanos(wait)).await;
                Ok(())
            }
        }
    }
}

impl<K: Hash + Eq> Shared<K> {
    fn decide(&self, key: Option<K>) -> Decision {
        let now = self.limits.clock.now();
        match (&self.cells, key) {
            (Cells::One(gcra), _) => gcra.decide(self.limits.rate, now),
            (Cells::Keyed(_), None) => Decision::Now,
            (Cells::Keyed(map), Some(key)) => {
                if let Some(gcra) = map.get(&key) {
                    return gcra.decide(self.limits.rate, now);
                }
                if map.len() >= SWEEP_AT {
                    map.retain(|_, gcra| !gcra.idle(now));
                }
                map.entry(key)
                    .or_insert_with(Gcra::new)
                    .decide(self.limits.rate, now)
            }
        }
    }
}

/// Picks the key a request is limited under.
pub trait Keyer<Req>: Clone {
    /// The key type.
    type Key: Hash + Eq;

    /// The request's key; `None` leaves it unlimited.
    fn key(&self, req: &Req) -> Option<Self::Key>;
}

/// One rate for every request, whatever its type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unkeyed;

impl<Req> Keyer<Req> for Unkeyed {
    type Key = ();

    #[inline]
    fn key(&self, _: &Req) -> Option<()> {
        Some(())
    }
}

/// A closure as a [`Keyer`]; see [`RateLimiterLayer::keyed`].
#[derive(Clone, Copy)]
pub struct KeyFn<F>(F);

impl<F> std::fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<Req, K, F> Keyer<Req> for KeyFn<F>
where
    K: Hash + Eq,
    F: Fn(&Req) -> Option<K> + Clone,
{
    type Key = K;

    fn key(&self, req: &Req) -> Option<K> {
        (self.0)(req)
    }
}

/// A rate-limited service; see [`RateLimiterLayer`].
pub struct RateLimiter<S, K = (), F = Unkeyed> {
    inner: S,
    shared: Arc<Shared<K>>,
    key: F,
}

impl<S: Clone, K, F: Clone> Clone for RateLimiter<S, K, F> {
    fn clone(&self) -> Self {
        RateLimiter {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K, F> std::fmt::Debug for RateLimiter<S, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, F> RateLimiter<S, K, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, F, Req> Service<Req> for RateLimiter<S, K, F>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    K: Hash + Eq,
    F: Keyer<Req, Key = K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, S::Future, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shared.decide(self.key.key(&req)) {
            Decision::Now => ResponseFuture::calling(self.inner.call(req), ()),
            Decision::Rejected { next_in } => {
                ResponseFuture::failed(RateLimited::new(Duration::from_nanos(next_in)).into())
            }
            Decision::After(wait) => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let wait = Box::pin(async move {
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                    Ok(())
                });
                ResponseFuture::waiting(wait, ready, req)
            }
        }
    }
}
