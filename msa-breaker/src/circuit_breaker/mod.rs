//! Circuit breaker: stop calling a downstream that is failing, give it time, probe it, and
//! resume when it answers again; Resilience4j's state machine as a tower layer.
//!
//! [`CircuitBreakerLayer`] wraps any `tower::Service` whose error is `Into<BoxError>`. Calls
//! the breaker rejects fail fast with [`CircuitOpen`], detectable with
//! `err.is::<CircuitOpen>()`. The [`CircuitBreaker`] behind a layer is a handle: read its
//! state and metrics, force transitions, listen to its events, apply new config.
//!
//! # Examples
//!
//! ```
//! use msa_breaker::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpen};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
//! let breaker = *layer.breaker();
//! let mut service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) });
//!
//! assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 2);
//! breaker.transition_to_forced_open();
//! let error = service.ready().await.unwrap().call(1).await.unwrap_err();
//! assert!(error.is::<CircuitOpen>());
//! # }
//! ```

mod breaker;
pub mod config;
mod durations;
mod engine;
pub mod error;
pub mod future;
mod layer;
mod metrics;
mod registry;
mod window;

pub use self::breaker::{CircuitBreaker, Event, Metrics, Permit, State};
pub use self::config::{CircuitBreakerConfig, InitialState, InvalidConfig, SlidingWindowType};
pub use self::engine::{Engine, EnginePermit};
#[cfg(feature = "failsafe")]
pub use self::engine::{Failsafe, FailsafePermit};
pub use self::error::CircuitOpen;
pub use self::layer::CircuitBreakerLayer;
pub use self::registry::CircuitBreakerRegistry;

use std::task::{Context, Poll};

use tower::Service;

use self::future::ResponseFuture;
use crate::{AnyResponse, BoxError, Classify};

/// A service guarded by a circuit breaker ([`CircuitBreaker`] unless another [`Engine`]);
/// see [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = AnyResponse, E = CircuitBreaker> {
    inner: S,
    breaker: E,
    classify: C,
}

impl<S, C, E> CircuitBreakerService<S, C, E> {
    /// Guards `inner` with `breaker`, classifying results with `classify`.
    pub fn new(inner: S, breaker: E, classify: C) -> Self {
        CircuitBreakerService {
            inner,
            breaker,
            classify,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &E {
        &self.breaker
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

impl<S, C, E, Req> Service<Req> for CircuitBreakerService<S, C, E>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    E: Engine,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classify.clone())
            }
            Err(state) => ResponseFuture::rejected(self.breaker.clone(), state),
        }
    }
}
