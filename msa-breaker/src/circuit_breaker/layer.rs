use tower::Layer;

use super::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerService, InvalidConfig};
use crate::{AnyResponse, HttpStatus};

/// A [`Layer`] that guards a service with a [`CircuitBreaker`].
///
/// Every service the layer wraps shares the layer's breaker. Results are classified by `C`:
/// [`AnyResponse`] by default (errors fail), [`HttpStatus`] for HTTP (5xx fails, 4xx is
/// ignored), or any [`Classify`](crate::Classify).
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = AnyResponse, E = CircuitBreaker> {
    breaker: E,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker named `default`.
    ///
    /// # Panics
    ///
    /// When `config` is out of range; use [`CircuitBreakerLayer::try_new`] for config that
    /// comes from outside the program.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        match Self::try_new("default", config) {
            Ok(layer) => layer,
            Err(error) => panic!("{error}"),
        }
    }

    /// A layer with a new breaker named `name`.
    pub fn try_new(name: &str, config: CircuitBreakerConfig) -> Result<Self, InvalidConfig> {
        Ok(Self::from_breaker(CircuitBreaker::new(name, config)?))
    }

    /// A layer around an existing breaker (shared with whoever else holds it).
    pub fn from_breaker(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: AnyResponse,
        }
    }
}

#[cfg(feature = "failsafe")]
impl<P, I> CircuitBreakerLayer<AnyResponse, super::Failsafe<P, I>> {
    /// A layer driven by a `failsafe::StateMachine` (feature `failsafe`), for services that
    /// already use failsafe's policies; rejections carry `name`.
    pub fn from_failsafe(name: &str, machine: failsafe::StateMachine<P, I>) -> Self {
        CircuitBreakerLayer {
            breaker: super::Failsafe::new(name, machine),
            classify: AnyResponse,
        }
    }
}

impl<C, E> CircuitBreakerLayer<C, E> {
    /// The breaker.
    pub fn breaker(&self) -> &E {
        &self.breaker
    }

    /// Classifies results with `classify` instead.
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2, E> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }

    /// Classifies HTTP responses by status: 5xx fails, 4xx is ignored.
    pub fn http(self) -> CircuitBreakerLayer<HttpStatus, E> {
        self.classify(HttpStatus)
    }
}

impl<S, C: Clone, E: Clone> Layer<S> for CircuitBreakerLayer<C, E> {
    type Service = CircuitBreakerService<S, C, E>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classify.clone())
    }
}
