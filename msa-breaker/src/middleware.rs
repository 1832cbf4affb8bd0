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

/// The whole Resilience4j stack per downstream for `reqwest_middleware` clients, named by
/// the URL's host (`http://payments/...` uses the stack of `payments`, with
/// `instances.payments` settings where the sections have them): **Retry →
/// CircuitBreaker → RateLimiter → TimeLimiter → Bulkhead → the call**, as
/// [`stack`](crate::stack) explains.
///
/// Each attempt runs the rest of the client's middleware again (so a load balancer after
/// this one chooses an instance per attempt). 5xx and 429 answers fail, other 4xx are
/// ignored, only idempotent methods are retried unless `retry-non-idempotent`, and
/// `Retry-After` is honoured. Errors downcast to the layer's own error types
/// ([`CircuitOpen`](crate::circuit_breaker::CircuitOpen),
/// [`RateLimited`](crate::rate_limit::error::RateLimited),
/// [`Elapsed`](crate::timeout::error::Elapsed),
/// [`BulkheadFull`](crate::bulkhead::error::BulkheadFull)).
///
/// # Examples
///
/// ```
/// use msa_breaker::middleware::ResilienceMiddleware;
/// use msa_breaker::stack::{Resilience, ResilienceConfig};
///
/// let config: ResilienceConfig = serde_json::from_value(serde_json::json!({
///     "circuitbreaker": {},
///     "retry": { "instances": { "payments": { "max-attempts": 2 } } },
/// })).unwrap();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(ResilienceMiddleware::new(Resilience::new(config).unwrap()))
///     .build();
/// # let _ = client;
/// ```
#[derive(Clone, Debug)]
pub struct ResilienceMiddleware {
    resilience: crate::stack::Resilience,
}

impl ResilienceMiddleware {
    /// Stacks from `resilience` (updates to it apply to calls made afterwards).
    pub fn new(resilience: crate::stack::Resilience) -> Self {
        ResilienceMiddleware { resilience }
    }

    /// The stacks' settings and breakers.
    pub fn resilience(&self) -> &crate::stack::Resilience {
        &self.resilience
    }
}

fn outcome(result: &reqwest_middleware::Result<reqwest::Response>) -> Outcome {
    match result {
        Ok(response) => crate::HttpStatus::of(response.status()),
        Err(_) => Outcome::Failure,
    }
}

fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// One attempt through the breaker, rate limiter, time limiter and bulkhead.
async fn attempt(
    parts: &crate::stack::Parts,
    req: reqwest::Request,
    extensions: &mut Extensions,
    next: Next<'_>,
) -> reqwest_middleware::Result<reqwest::Response> {
    let permit = parts
        .breaker
        .map(|breaker| breaker.try_acquire())
        .transpose()
        .map_err(reqwest_middleware::Error::middleware)?;
    let result = async {
        if let Some((_, rate)) = &parts.rate {
            rate.acquire()
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
        }
        let call = async {
            let _slot = match &parts.bulkhead {
                Some((_, bulkhead)) => Some(
                    bulkhead
                        .acquire()
                        .await
                        .map_err(reqwest_middleware::Error::middleware)?,
                ),
                None => None,
            };
            next.run(req, extensions).await
        };
        match &parts.timeout {
            Some((_, timeout)) => timeout
                .run(call)
                .await
                .unwrap_or_else(|elapsed| Err(reqwest_middleware::Error::middleware(elapsed))),
            None => call.await,
        }
    }
    .await;
    if let Some(permit) = permit {
        permit.complete(outcome(&result));
    }
    result
}

#[async_trait::async_trait]
impl Middleware for ResilienceMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Some(host) = req.url().host_str() else {
            return next.run(req, extensions).await;
        };
        let name: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let stack = self
            .resilience
            .stack(&name, crate::stack::MAX_STACKS)
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(parts) = stack else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "{} resilience stacks made; calls to further hosts go without one",
                    crate::stack::MAX_STACKS
                );
            });
            return next.run(req, extensions).await;
        };
        let mut policy = parts.retry.as_ref().map(|(_, retry)| retry.policy());
        let may_repeat = policy
            .as_ref()
            .is_some_and(|policy| policy.config().retry_non_idempotent || idempotent(req.method()));
        let mut request = req;
        loop {
            let again = if may_repeat {
                request.try_clone()
            } else {
                None
            };
            let result = attempt(&parts, request, extensions, next.clone()).await;
            let Some(policy) = policy.as_mut() else {
                return result;
            };
            let open = matches!(&result, Err(error) if is_circuit_open(error));
            let asked = result
                .as_ref()
                .ok()
                .and_then(|response| crate::HttpStatus::retry_after_header(response.headers()));
            let wait = policy.next_wait(outcome(&result), open, again.is_some(), asked);
            match (wait, again) {
                (Some(wait), Some(next_request)) => {
                    drop(result);
                    tokio::time::sleep(wait).await;
                    request = next_request;
                }
                _ => return result,
            }
        }
    }
}
