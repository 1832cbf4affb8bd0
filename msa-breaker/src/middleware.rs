//! A circuit breaker per downstream for `reqwest_middleware` clients.

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::Outcome;
use crate::circuit_breaker::CircuitBreakerRegistry;

/// Guards a `reqwest_middleware` client's calls with one circuit breaker per host, taken
/// from a [`CircuitBreakerRegistry`] (so `http://payments/...` uses the breaker named
/// `payments`, with `instances.payments` settings if the section has them).
///
/// A call fails the breaker when it does not complete (connection refused, timeout) or
/// answers 5xx. While the breaker is open, calls fail at once with an error that
/// downcasts to [`CircuitOpen`](crate::circuit_breaker::CircuitOpen): check it with
/// [`is_circuit_open`] to answer with a fallback.
///
/// Put it before a load balancer so the breaker sees the service name, not one instance.
///
/// # Examples
///
/// ```
/// use msa_breaker::Section;
/// use msa_breaker::circuit_breaker::CircuitBreakerRegistry;
/// use msa_breaker::middleware::CircuitBreakerMiddleware;
///
/// let registry = CircuitBreakerRegistry::new(Section::default()).unwrap();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(CircuitBreakerMiddleware::new(registry))
///     .build();
/// # let _ = client;
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerMiddleware {
    registry: CircuitBreakerRegistry,
}

impl CircuitBreakerMiddleware {
    /// One breaker per host, from `registry`.
    pub fn new(registry: CircuitBreakerRegistry) -> Self {
        CircuitBreakerMiddleware { registry }
    }

    /// The breakers' registry (to read their state, or apply new settings).
    pub fn registry(&self) -> &CircuitBreakerRegistry {
        &self.registry
    }
}

/// Whether `error` is a call an open circuit breaker refused.
pub fn is_circuit_open(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Middleware(error) => error
            .downcast_ref::<crate::circuit_breaker::CircuitOpen>()
            .is_some(),
        reqwest_middleware::Error::Reqwest(_) => false,
    }
}

#[async_trait::async_trait]
impl Middleware for CircuitBreakerMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Some(host) = req.url().host_str() else {
            return next.run(req, extensions).await;
        };
        let breaker = self
            .registry
            .get(host)
            .map_err(reqwest_middleware::Error::middleware)?;
        let permit = breaker
            .try_acquire()
            .map_err(reqwest_middleware::Error::middleware)?;
        let result = next.run(req, extensions).await;
        let failed = match &result {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        permit.complete(if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        });
        result
    }
}
