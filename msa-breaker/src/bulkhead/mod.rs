//! Bulkhead: at most `max-concurrent-calls` calls at once, the rest wait up to
//! `max-wait-duration` for a slot, then are rejected with
//! [`BulkheadFull`].
//!
//! One bulkhead (and its slots) is shared by every service its layer wraps. With the
//! default `max-wait-duration` of 0, a call that finds no free slot is rejected at once and
//! nothing is allocated; a call that may wait clones the inner service, as tower's
//! `Retry` does, because it calls only once a slot is free.
//!
//! # Examples
//!
//! ```
//! use msa_breaker::bulkhead::{BulkheadConfig, BulkheadLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(BulkheadLayer::new(BulkheadConfig { max_concurrent_calls: 10, ..Default::default() }))
//!     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```

pub mod error;
mod layer;

pub use self::layer::BulkheadLayer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

use self::error::BulkheadFull;
use crate::BoxError;
use crate::deferred::ResponseFuture;

/// Bulkhead settings; Resilience4j's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed at once; 25.
    pub max_concurrent_calls: u32,
    /// How long a call may wait for a free slot; 0 rejects at once.
    #[serde(with = "msa_core::duration")]
    pub max_wait_duration: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent_calls: 25,
            max_wait_duration: Duration::ZERO,
        }
    }
}

/// A service limited to a number of concurrent calls; see [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct Bulkhead<S> {
    inner: S,
    slots: Arc<Semaphore>,
    config: Arc<BulkheadConfig>,
}

impl<S> Bulkhead<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Free slots now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, S::Future, OwnedSemaphorePermit>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => ResponseFuture::calling(self.inner.call(req), permit),
            Err(_) if self.config.max_wait_duration.is_zero() => {
                ResponseFuture::failed(BulkheadFull::new(&self.config).into())
            }
            Err(_) => {
                // Call a clone once a slot frees up; keep the one that was made ready.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let slots = Arc::clone(&self.slots);
                let config = Arc::clone(&self.config);
                let wait = Box::pin(async move {
                    match tokio::time::timeout(config.max_wait_duration, slots.acquire_owned())
                        .await
                    {
                        Ok(Ok(permit)) => Ok(permit),
                        _ => Err(BoxError::from(BulkheadFull::new(&config))),
                    }
                });
                ResponseFuture::waiting(wait, ready, req)
            }
        }
    }
}
