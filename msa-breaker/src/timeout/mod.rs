//! Timeout (Resilience4j's TimeLimiter): a call that takes too long is cancelled.
//!
//! On expiry the inner future is dropped, so the work it was doing stops there (the JVM can
//! only stop waiting for it) and the caller gets [`Elapsed`](error::Elapsed).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use msa_breaker::timeout::{TimeoutConfig, TimeoutLayer, error::Elapsed};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(TimeoutConfig { timeout_duration: Duration::from_secs(1) }))
//!     .service_fn(|_: ()| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, std::io::Error>("late")
//!     });
//! let error = svc.oneshot(()).await.unwrap_err();
//! assert!(error.is::<Elapsed>());
//! # }
//! ```

pub mod error;
pub mod future;
mod layer;

pub use self::layer::TimeoutLayer;

use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::Service;

use self::future::ResponseFuture;
use crate::BoxError;

/// Timeout settings; Resilience4j's TimeLimiter names and default (1 s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TimeoutConfig {
    /// The longest a call may take; 1 s.
    #[serde(with = "msa_core::duration")]
    pub timeout_duration: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            timeout_duration: Duration::from_secs(1),
        }
    }
}

/// A service whose calls are cancelled after a timeout; see [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
    name: Option<std::sync::Arc<str>>,
}

impl<S> Timeout<S> {
    /// Cancels `inner`'s calls after `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Timeout {
            inner,
            timeout,
            name: None,
        }
    }

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
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(
            self.inner.call(req),
            tokio::time::sleep(self.timeout),
            self.timeout,
            self.name.clone(),
        )
    }
}
