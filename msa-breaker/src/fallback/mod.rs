//! Fallback: turn an error or a rejection into a response.
//!
//! The function sees every error of the inner service (the downstream's own errors and the
//! rejections of layers below: [`CircuitOpen`](crate::circuit_breaker::CircuitOpen),
//! [`Elapsed`](crate::timeout::error::Elapsed), ...) and returns a response to use instead,
//! or the error to pass on.
//!
//! # Examples
//!
//! ```
//! use msa_breaker::BoxError;
//! use msa_breaker::circuit_breaker::CircuitOpen;
//! use msa_breaker::fallback::FallbackLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(|error: BoxError| {
//!         if error.is::<CircuitOpen>() { Ok("cached price") } else { Err(error) }
//!     }))
//!     .service_fn(|_: ()| async { Err::<&str, BoxError>(Box::new(std::io::Error::other("down"))) });
//! // Not a rejection: the error passes through.
//! assert!(svc.oneshot(()).await.is_err());
//! # }
//! ```

pub mod future;

use std::fmt;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use self::future::ResponseFuture;
use crate::BoxError;

/// A [`Layer`] that replaces errors with responses from a function.
#[derive(Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FallbackLayer")
    }
}

impl<F> FallbackLayer<F> {
    /// Calls `fallback` with every error; it returns the response to use or an error.
    pub fn new(fallback: F) -> Self {
        FallbackLayer { fallback }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// A service whose errors go through a fallback function; see [`FallbackLayer`].
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    fallback: F,
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F> Fallback<S, F> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, Req> Service<Req> for Fallback<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(BoxError) -> Result<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Not ready is not an answer a fallback can give: pass it on.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.fallback.clone())
    }
}
