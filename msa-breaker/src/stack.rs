//! The usual stack for one downstream, from one config section, in one call.
//!
//! # Order
//!
//! Outermost first: **Retry → CircuitBreaker → RateLimiter → Timeout → Bulkhead → the call**.
//!
//! - **Retry** is outermost so that every attempt passes through everything below: each
//!   attempt is judged by the breaker, limited, timed and counted in the bulkhead on its
//!   own. It does not retry an open breaker's rejection (the breaker stays open for its
//!   wait), and its budget keeps retries from multiplying an outage.
//! - **CircuitBreaker** comes next so that it sees each attempt's real outcome, timeouts
//!   included (an attempt the timeout cancels is a failure), and so that an open breaker
//!   turns calls away before they spend rate or bulkhead capacity.
//! - **RateLimiter** limits what is actually sent; calls the breaker rejected never take a
//!   turn.
//! - **Timeout** bounds each attempt, not the whole retry sequence, and cancels the call
//!   below it, which gives its bulkhead slot back at once.
//! - **Bulkhead** is innermost: a slot is held exactly while a call is in flight to the
//!   downstream.
//!
//! This is Resilience4j's recommended order for its Spring annotations.
//!
//! # Examples
//!
//! ```
//! use msa_breaker::stack::{Resilience, ResilienceConfig};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let config: ResilienceConfig = serde_json::from_value(serde_json::json!({
//!     "circuitbreaker": { "instances": { "payments": { "failure-rate-threshold": 25 } } },
//!     "retry": { "configs": { "default": { "max-attempts": 2 } } },
//!     "timelimiter": { "configs": { "default": { "timeout-duration": "2s" } } },
//!     "bulkhead": {},
//! })).unwrap();
//! let resilience = Resilience::new(config).unwrap();
//! let payments = resilience.layer("payments").unwrap()
//!     .layer(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x * 2) }));
//! assert_eq!(payments.oneshot(21).await.unwrap(), 42);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tower::Layer;
use tower::util::Either;

use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
use crate::circuit_breaker::{CircuitBreakerLayer, CircuitBreakerRegistry, CircuitBreakerService};
use crate::rate_limit::{RateLimiter, RateLimiterConfig, RateLimiterLayer};
use crate::retry::{CloneRequest, HttpReplay, RetryConfig, RetryLayer, RetryPolicy};
use crate::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use crate::{AnyResponse, BoxErrors, HttpStatus, Section, SectionError};

/// Every layer's section, under Resilience4j's module names. A module that is absent adds
/// no layer; an empty one (`bulkhead: {}`) adds its layer with default settings.
///
/// ```yaml
/// resilience4j:
///   circuitbreaker: { configs: { default: { ... } }, instances: { payments: { ... } } }
///   retry:          { configs: { default: { max-attempts: 3 } } }
///   ratelimiter:    { ... }
///   timelimiter:    { configs: { default: { timeout-duration: 2s } } }
///   bulkhead:       { ... }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Circuit breakers.
    pub circuitbreaker: Option<Section>,
    /// Retries.
    pub retry: Option<Section>,
    /// Rate limiters.
    pub ratelimiter: Option<Section>,
    /// Timeouts (Resilience4j's TimeLimiter).
    pub timelimiter: Option<Section>,
    /// Bulkheads.
    pub bulkhead: Option<Section>,
}

fn prefixed(module: &str, error: SectionError) -> SectionError {
    SectionError {
        path: format!("{module}.{}", error.path),
        reason: error.reason,
    }
}

/// The stack's layers for one name, shared by every layer made for that name.
#[derive(Clone)]
struct Parts {
    retry: Option<RetryLayer>,
    breaker: Option<CircuitBreakerLayer>,
    rate: Option<RateLimiterLayer>,
    timeout: Option<TimeoutLayer>,
    bulkhead: Option<BulkheadLayer>,
}

/// Builds resilience stacks by downstream name from one [`ResilienceConfig`]; see the
/// [module docs](self) for the order.
#[derive(Clone)]
pub struct Resilience {
    config: Arc<ResilienceConfig>,
    breakers: Option<CircuitBreakerRegistry>,
    parts: Arc<Mutex<BTreeMap<String, Parts>>>,
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn resolve<T: serde::de::DeserializeOwned>(
    module: &str,
    section: &Option<Section>,
    name: &str,
) -> Result<Option<T>, SectionError> {
    section
        .as_ref()
        .map(|s| s.resolve(name))
        .transpose()
        .map_err(|e| prefixed(module, e))
}

impl Resilience {
    /// Stacks for `config`; every instance it names must resolve and validate.
    pub fn new(config: ResilienceConfig) -> Result<Self, SectionError> {
        let breakers = config
            .circuitbreaker
            .clone()
            .map(CircuitBreakerRegistry::new)
            .transpose()
            .map_err(|e| prefixed("circuitbreaker", e))?;
        let resilience = Resilience {
            config: Arc::new(config),
            breakers,
            parts: Arc::default(),
        };
        let names: Vec<String> = [
            &resilience.config.retry,
            &resilience.config.ratelimiter,
            &resilience.config.timelimiter,
            &resilience.config.bulkhead,
        ]
        .into_iter()
        .flatten()
        .flat_map(|s| s.names().map(str::to_owned).collect::<Vec<_>>())
        .chain([String::new()])
        .collect();
        for name in names {
            resilience.build(&name)?;
        }
        Ok(resilience)
    }

    /// The circuit breakers, to read their state or apply new settings.
    pub fn breakers(&self) -> Option<&CircuitBreakerRegistry> {
        self.breakers.as_ref()
    }

    fn build(&self, name: &str) -> Result<Parts, SectionError> {
        let c = &self.config;
        let retry = resolve::<RetryConfig>("retry", &c.retry, name)?
            .map(|config| {
                RetryLayer::try_new(config).map_err(|e| SectionError {
                    path: format!("retry.instances.{name}.{}", e.key),
                    reason: e.reason,
                })
            })
            .transpose()?;
        let breaker = self
            .breakers
            .as_ref()
            .map(|registry| {
                registry
                    .get(name)
                    .map_err(|e| prefixed("circuitbreaker", e))
            })
            .transpose()?
            .map(CircuitBreakerLayer::from_breaker);
        Ok(Parts {
            retry,
            breaker,
            rate: resolve::<RateLimiterConfig>("ratelimiter", &c.ratelimiter, name)?
                .map(RateLimiterLayer::new),
            timeout: resolve::<TimeoutConfig>("timelimiter", &c.timelimiter, name)?
                .map(TimeoutLayer::new),
            bulkhead: resolve::<BulkheadConfig>("bulkhead", &c.bulkhead, name)?
                .map(BulkheadLayer::new),
        })
    }

    fn parts(&self, name: &str) -> Result<Parts, SectionError> {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = parts.get(name) {
            return Ok(existing.clone());
        }
        let built = self.build(name)?;
        parts.insert(name.to_owned(), built.clone());
        Ok(built)
    }

    /// The stack for downstream `name`, for any service whose requests are `Clone`: errors
    /// fail and are retried.
    pub fn layer(&self, name: &str) -> Result<ResilienceLayer, SectionError> {
        Ok(ResilienceLayer {
            parts: self.parts(name)?,
            classify: AnyResponse,
            replay: CloneRequest,
        })
    }

    /// The stack for HTTP downstream `name`: 5xx (and 429 for retries) fail, 4xx is
    /// ignored, only idempotent methods are retried unless configured, `Retry-After` is
    /// honoured.
    pub fn http_layer(
        &self,
        name: &str,
    ) -> Result<ResilienceLayer<HttpStatus, HttpReplay>, SectionError> {
        let parts = self.parts(name)?;
        let any_method = resolve::<RetryConfig>("retry", &self.config.retry, name)?
            .is_some_and(|c| c.retry_non_idempotent);
        Ok(ResilienceLayer {
            parts,
            classify: HttpStatus,
            replay: HttpReplay::new(any_method),
        })
    }
}

/// One downstream's stack as a [`Layer`].
#[derive(Clone)]
pub struct ResilienceLayer<C = AnyResponse, R = CloneRequest> {
    parts: Parts,
    classify: C,
    replay: R,
}

impl<C, R> fmt::Debug for ResilienceLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parts;
        f.debug_struct("ResilienceLayer")
            .field("retry", &p.retry.is_some())
            .field("circuit_breaker", &p.breaker.is_some())
            .field("rate_limiter", &p.rate.is_some())
            .field("timeout", &p.timeout.is_some())
            .field("bulkhead", &p.bulkhead.is_some())
            .finish()
    }
}

/// `S` with a bulkhead (errors boxed either way, as `Either` needs one error type).
pub type WithBulkhead<S> = Either<Bulkhead<S>, BoxErrors<S>>;
/// ... and a timeout.
pub type WithTimeout<S> = Either<Timeout<WithBulkhead<S>>, WithBulkhead<S>>;
/// ... and a rate limiter.
pub type WithRateLimit<S> = Either<RateLimiter<WithTimeout<S>>, WithTimeout<S>>;
/// ... and a circuit breaker.
pub type WithBreaker<S, C> = Either<CircuitBreakerService<WithRateLimit<S>, C>, WithRateLimit<S>>;
/// The whole stack: each layer is there when its section is.
pub type Stack<S, C = AnyResponse, R = CloneRequest> =
    Either<tower::retry::Retry<RetryPolicy<C, R>, BoxErrors<WithBreaker<S, C>>>, WithBreaker<S, C>>;

fn either<L: Layer<S>, S>(layer: Option<&L>, inner: S) -> Either<L::Service, S> {
    match layer {
        Some(layer) => Either::Left(layer.layer(inner)),
        None => Either::Right(inner),
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for ResilienceLayer<C, R> {
    type Service = Stack<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        let p = &self.parts;
        let s = match p.bulkhead.as_ref() {
            Some(bulkhead) => Either::Left(bulkhead.layer(inner)),
            None => Either::Right(BoxErrors(inner)),
        };
        let s = either(p.timeout.as_ref(), s);
        let s = either(p.rate.as_ref(), s);
        let breaker = p.breaker.clone().map(|b| b.classify(self.classify.clone()));
        let s = either(breaker.as_ref(), s);
        let retry = p
            .retry
            .clone()
            .map(|r| r.with(self.classify.clone(), self.replay.clone()));
        either(retry.as_ref(), s)
    }
}
