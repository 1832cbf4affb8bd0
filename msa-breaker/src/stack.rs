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
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tower::Layer;
use tower::util::Either;

use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
use crate::circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, CircuitBreakerRegistry, CircuitBreakerService,
};
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

/// The stack's layers for one name, shared by every layer made for that name, with the
/// settings each was built from (so that an update keeps a layer whose settings did not
/// change, and with it its budget, slots and permissions).
#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) retry: Option<(RetryConfig, RetryLayer)>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) rate: Option<(RateLimiterConfig, RateLimiterLayer)>,
    pub(crate) timeout: Option<(TimeoutConfig, TimeoutLayer)>,
    pub(crate) bulkhead: Option<(BulkheadConfig, BulkheadLayer)>,
}

/// The settings and the stacks built so far.
struct State {
    config: Arc<ResilienceConfig>,
    breakers: Option<CircuitBreakerRegistry>,
    /// A registry given in code: kept across updates.
    fixed_breakers: bool,
    parts: BTreeMap<String, Arc<Parts>>,
}

/// The most stacks `middleware::ResilienceMiddleware` makes
/// (feature `reqwest-middleware`): targets past it (hosts a client was handed from outside,
/// say) are called without a stack rather than each keeping a breaker for the life of the
/// process.
pub const MAX_STACKS: usize = 1024;

/// Builds resilience stacks by downstream name from one [`ResilienceConfig`]; see the
/// [module docs](self) for the order. Clones share their stacks; [`update`](Self::update)
/// applies new settings to every stack, including those already built.
#[derive(Clone)]
pub struct Resilience {
    state: Arc<RwLock<State>>,
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("config", &self.read().config)
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

/// `old`'s layer when its settings are `config`, else a new one from `make`.
fn keep_or<C: PartialEq, L: Clone>(
    old: Option<&(C, L)>,
    config: Option<C>,
    make: impl FnOnce(&C) -> Result<L, SectionError>,
) -> Result<Option<(C, L)>, SectionError> {
    let Some(config) = config else {
        return Ok(None);
    };
    if let Some((was, layer)) = old
        && *was == config
    {
        return Ok(Some((config, layer.clone())));
    }
    let layer = make(&config)?;
    Ok(Some((config, layer)))
}

impl State {
    /// `name`'s layers under the current settings, reusing `old`'s where they match.
    fn build(&self, name: &str, old: Option<&Parts>) -> Result<Parts, SectionError> {
        let c = &self.config;
        // Stacks are named after their downstream; the unnamed default stack is reported
        // as `default`.
        let label: Arc<str> = if name.is_empty() {
            "default".into()
        } else {
            name.into()
        };
        let retry = keep_or(
            old.and_then(|o| o.retry.as_ref()),
            resolve::<RetryConfig>("retry", &c.retry, name)?,
            |config| {
                RetryLayer::try_new(config.clone())
                    .map(|layer| layer.named(label.clone()))
                    .map_err(|e| SectionError {
                        path: format!("retry.instances.{name}.{}", e.key),
                        reason: e.reason,
                    })
            },
        )?;
        // The unnamed stack only checks the defaults (which the registry checked when it
        // was made): a breaker of its own would be a live breaker named "" in every
        // listing and scrape.
        let breaker = self
            .breakers
            .as_ref()
            .filter(|_| !name.is_empty())
            .map(|registry| {
                registry
                    .get(name)
                    .map_err(|e| prefixed("circuitbreaker", e))
            })
            .transpose()?;
        Ok(Parts {
            retry,
            breaker,
            rate: keep_or(
                old.and_then(|o| o.rate.as_ref()),
                resolve::<RateLimiterConfig>("ratelimiter", &c.ratelimiter, name)?,
                |config| Ok(RateLimiterLayer::new(config.clone()).named(label.clone())),
            )?,
            timeout: keep_or(
                old.and_then(|o| o.timeout.as_ref()),
                resolve::<TimeoutConfig>("timelimiter", &c.timelimiter, name)?,
                |config| Ok(TimeoutLayer::new(config.clone()).named(label.clone())),
            )?,
            bulkhead: keep_or(
                old.and_then(|o| o.bulkhead.as_ref()),
                resolve::<BulkheadConfig>("bulkhead", &c.bulkhead, name)?,
                |config| Ok(BulkheadLayer::new(config.clone()).named(label.clone())),
            )?,
        })
    }

    /// Every name the settings give instances for, and the default.
    fn names(&self) -> Vec<String> {
        let c = &self.config;
        [&c.retry, &c.ratelimiter, &c.timelimiter, &c.bulkhead]
            .into_iter()
            .flatten()
            .flat_map(|s| s.names().map(str::to_owned).collect::<Vec<_>>())
            .chain([String::new()])
            .collect()
    }
}

impl Resilience {
    /// Stacks for `config`; every instance it names must resolve and validate.
    pub fn new(config: ResilienceConfig) -> Result<Self, SectionError> {
        crate::metrics::name_errors();
        let breakers = config
            .circuitbreaker
            .clone()
            .map(CircuitBreakerRegistry::new)
            .transpose()
            .map_err(|e| prefixed("circuitbreaker", e))?;
        let state = State {
            config: Arc::new(config),
            breakers,
            fixed_breakers: false,
            parts: BTreeMap::new(),
        };
        for name in state.names() {
            state.build(&name, None)?;
        }
        Ok(Resilience {
            state: Arc::new(RwLock::new(state)),
        })
    }

    /// Guards every downstream with a breaker from `registry` (whatever
    /// `circuitbreaker` says), now and after updates.
    pub fn with_breakers(self, registry: CircuitBreakerRegistry) -> Self {
        {
            let mut state = self.write();
            state.breakers = Some(registry);
            state.fixed_breakers = true;
            state.parts.clear();
        }
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        msa_core::sync::read(&self.state)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        msa_core::sync::write(&self.state)
    }

    /// The circuit breakers, to read their state or apply new settings.
    pub fn breakers(&self) -> Option<CircuitBreakerRegistry> {
        self.read().breakers.clone()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<ResilienceConfig> {
        self.read().config.clone()
    }

    /// Applies new settings to every stack, those already built included: a layer whose
    /// settings did not change stays as it is (its budget, slots, permissions); breakers
    /// keep their state and window ([`CircuitBreakerRegistry::update`]). Invalid settings
    /// change nothing.
    pub fn update(&self, config: ResilienceConfig) -> Result<(), SectionError> {
        let mut state = self.write();
        let mut next = State {
            config: Arc::new(config),
            breakers: state.breakers.clone(),
            fixed_breakers: state.fixed_breakers,
            parts: BTreeMap::new(),
        };
        if !next.fixed_breakers {
            next.breakers = match (&next.config.circuitbreaker, &state.breakers) {
                (None, _) => None,
                (Some(section), None) => Some(
                    CircuitBreakerRegistry::new(section.clone())
                        .map_err(|e| prefixed("circuitbreaker", e))?,
                ),
                // Checked here; applied below, once everything else has been.
                (Some(section), Some(registry)) => {
                    CircuitBreakerRegistry::new(section.clone())
                        .map_err(|e| prefixed("circuitbreaker", e))?;
                    Some(registry.clone())
                }
            };
        }
        for name in next.names() {
            next.build(&name, None)?;
        }
        for (name, old) in &state.parts {
            let parts = next.build(name, Some(old))?;
            next.parts.insert(name.clone(), Arc::new(parts));
        }
        if !next.fixed_breakers
            && let (Some(section), Some(registry)) = (&next.config.circuitbreaker, &next.breakers)
        {
            registry
                .update(section.clone())
                .map_err(|e| prefixed("circuitbreaker", e))?;
        }
        *state = next;
        Ok(())
    }

    pub(crate) fn parts(&self, name: &str) -> Result<Arc<Parts>, SectionError> {
        Ok(self
            .stack(name, usize::MAX)?
            .unwrap_or_else(|| unreachable!("no bound")))
    }

    /// `name`'s stack, made on first use while fewer than `bound` exist; `None` past it.
    pub(crate) fn stack(
        &self,
        name: &str,
        bound: usize,
    ) -> Result<Option<Arc<Parts>>, SectionError> {
        if let Some(existing) = self.read().parts.get(name) {
            return Ok(Some(existing.clone()));
        }
        let mut state = self.write();
        if let Some(existing) = state.parts.get(name) {
            return Ok(Some(existing.clone()));
        }
        if state.parts.len() >= bound {
            return Ok(None);
        }
        let built = Arc::new(state.build(name, None)?);
        state.parts.insert(name.to_owned(), built.clone());
        Ok(Some(built))
    }

    /// The stack for downstream `name`, for any service whose requests are `Clone`: errors
    /// fail and are retried.
    pub fn layer(&self, name: &str) -> Result<ResilienceLayer, SectionError> {
        Ok(ResilienceLayer {
            parts: (*self.parts(name)?).clone(),
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
        let any_method = parts
            .retry
            .as_ref()
            .is_some_and(|(config, _)| config.retry_non_idempotent);
        Ok(ResilienceLayer {
            parts: (*parts).clone(),
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
            Some((_, bulkhead)) => Either::Left(bulkhead.layer(inner)),
            None => Either::Right(BoxErrors(inner)),
        };
        let s = either(p.timeout.as_ref().map(|(_, l)| l), s);
        let s = either(p.rate.as_ref().map(|(_, l)| l), s);
        let breaker = p
            .breaker
            .map(|b| CircuitBreakerLayer::from_breaker(b).classify(self.classify.clone()));
        let s = either(breaker.as_ref(), s);
        let retry = p
            .retry
            .clone()
            .map(|(_, r)| r.with(self.classify.clone(), self.replay.clone()));
        either(retry.as_ref(), s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checking_the_defaults_makes_no_unnamed_breaker() {
        let resilience = Resilience::new(ResilienceConfig {
            circuitbreaker: Some(Section::default()),
            ..Default::default()
        })
        .unwrap();
        let registry = resilience.breakers().unwrap();
        assert!(registry.breakers().is_empty(), "{:?}", registry.breakers());
        resilience.stack("payments", 8).unwrap();
        let names: Vec<String> = registry.breakers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["payments"]);
    }

    #[test]
    fn stacks_past_the_bound_are_not_made() {
        let resilience = Resilience::new(ResilienceConfig {
            circuitbreaker: Some(Section::default()),
            ..Default::default()
        })
        .unwrap();
        assert!(resilience.stack("a.example", 2).unwrap().is_some());
        assert!(resilience.stack("b.example", 2).unwrap().is_some());
        assert!(resilience.stack("c.example", 2).unwrap().is_none());
        // One already made stays reachable.
        assert!(resilience.stack("a.example", 2).unwrap().is_some());
        assert_eq!(resilience.read().parts.len(), 2);
    }
}
