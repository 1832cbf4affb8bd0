//! The filters that wrap the upstream call: CircuitBreaker (with `fallbackUri`), Retry and
//! CacheRequestBody, with their settings from the file's `resilience4j` sections.
//!
//! A CircuitBreaker's breaker is `resilience4j.circuitbreaker.instances.<name>` (kept
//! across reloads, by name, and updated by them). A Retry is msa-breaker's retry: its
//! attempts, waits (exponential, randomized) and budget start from
//! `resilience4j.retry.instances.<name>` (the route id when the filter names none) and
//! Spring's arguments (`retries`, `backoff`) override them; a `Retry-After` from the
//! upstream is honoured; retries stop when the budget is spent.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use msa_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerRegistry};
use msa_breaker::retry::{CloneRequest, RetryConfig, RetryLayer, RetryPolicy};
use msa_breaker::timeout::TimeoutConfig;
use msa_breaker::{AnyResponse, HttpStatus, Outcome, Section};

use super::Filter;
use crate::config::Args;
use crate::error::error_response;

/// The most body bytes CacheRequestBody keeps for retries.
const CACHE_LIMIT: usize = 10 << 20;

/// What the resilience filters are built from: the gateway's breakers (kept across
/// reloads) and the file's Retry and TimeLimiter sections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resilience<'a> {
    pub(crate) breakers: &'a CircuitBreakerRegistry,
    pub(crate) retry: &'a Section,
    pub(crate) time_limiter: &'a Section,
}

/// CircuitBreaker's arguments, with its breaker from the gateway's registry.
#[derive(Debug)]
pub(crate) struct BreakerFilter {
    pub(crate) breaker: CircuitBreaker,
    /// `forward:/path` to dispatch to when the call fails or the breaker is open.
    pub(crate) fallback: Option<String>,
    /// Statuses that count as failures (besides errors and timeouts).
    pub(crate) statuses: Vec<StatusCode>,
    /// `resilience4j.timelimiter`'s limit for the breaker's name, when the file gives one.
    pub(crate) timeout: Option<Duration>,
}

impl BreakerFilter {
    pub(crate) fn build(args: &Args, resilience: Resilience<'_>) -> Result<Self, String> {
        let name = args.required("name", 0)?;
        let fallback = match args.text("fallbackUri", 1)? {
            None => None,
            Some(uri) => Some(
                uri.strip_prefix("forward:")
                    .filter(|p| p.starts_with('/'))
                    .ok_or_else(|| format!("fallbackUri {uri:?} must be forward:/path"))?
                    .to_owned(),
            ),
        };
        let statuses = args
            .list("statusCodes", 2)?
            .iter()
            .map(|s| super::status(s))
            .collect::<Result<_, _>>()?;
        let breaker = resilience.breakers.get(&name).map_err(|e| e.to_string())?;
        let limiter = resilience.time_limiter;
        let timeout = match limiter.instances.contains_key(&name)
            || limiter.configs.contains_key(msa_breaker::DEFAULT_CONFIG)
        {
            false => None,
            true => {
                let config: TimeoutConfig = limiter.resolve(&name).map_err(|e| e.to_string())?;
                Some(config.timeout_duration)
            }
        };
        Ok(BreakerFilter {
            breaker,
            fallback,
            statuses,
            timeout,
        })
    }

    /// Whether an answer counts as a failure (`failed`: the gateway's own error answer).
    fn fails(&self, status: StatusCode, failed: bool) -> bool {
        failed || self.statuses.contains(&status)
    }
}

/// Retry's arguments over msa-breaker's retry: Spring's defaults are 3 retries of GET on
/// 5xx answers and errors, with no wait unless a backoff is given.
#[derive(Debug)]
pub(crate) struct RetryFilter {
    /// The attempts, waits and budget (shared by the route's requests).
    layer: RetryLayer<AnyResponse, CloneRequest>,
    statuses: Vec<StatusCode>,
    series: Vec<u16>,
    methods: Vec<Method>,
}

impl RetryFilter {
    pub(crate) fn build(args: &Args, route_id: &str, section: &Section) -> Result<Self, String> {
        let name = args.text("name", usize::MAX)?;
        let name = name.as_deref().unwrap_or(route_id);
        let configured = section.instances.contains_key(name)
            || section.configs.contains_key(msa_breaker::DEFAULT_CONFIG);
        let mut config: RetryConfig = section.resolve(name).map_err(|e| e.to_string())?;
        if !configured {
            // Spring Cloud Gateway's defaults: 3 retries, at once.
            config.max_attempts = 4;
            config.wait_duration = Duration::ZERO;
        }
        if let Some(n) = args.text("retries", 0)? {
            let retries: u32 = n
                .parse()
                .map_err(|_| format!("retries {n:?} is not a whole number"))?;
            config.max_attempts = retries.saturating_add(1);
        }
        let statuses = args
            .list("statuses", 1)?
            .iter()
            .map(|s| super::status(s))
            .collect::<Result<Vec<_>, _>>()?;
        let series = if args.has("series") {
            args.list("series", usize::MAX)?
        } else if statuses.is_empty() {
            vec!["SERVER_ERROR".to_owned()]
        } else {
            Vec::new()
        };
        let series = series
            .iter()
            .map(|s| match s.as_str() {
                "INFORMATIONAL" | "1" => Ok(1),
                "SUCCESSFUL" | "2" => Ok(2),
                "REDIRECTION" | "3" => Ok(3),
                "CLIENT_ERROR" | "4" => Ok(4),
                "SERVER_ERROR" | "5" => Ok(5),
                other => Err(format!(
                    "series {other:?} is not SERVER_ERROR, CLIENT_ERROR, ..."
                )),
            })
            .collect::<Result<_, _>>()?;
        let methods = if args.has("methods") {
            args.list("methods", usize::MAX)?
        } else {
            vec!["GET".to_owned()]
        };
        let methods = methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{m:?} is not an HTTP method"))
            })
            .collect::<Result<_, _>>()?;
        if let Some(map) = args.map("backoff") {
            let duration = |key: &str, default: Duration| -> Result<Duration, String> {
                match map.get(key) {
                    None => Ok(default),
                    Some(value) => msa_core::duration::deserialize(value.clone())
                        .map_err(|e| format!("backoff {key}: {e}")),
                }
            };
            config.enable_exponential_backoff = true;
            config.wait_duration = duration("firstBackoff", Duration::from_millis(5))?;
            config.exponential_max_wait_duration =
                duration("maxBackoff", Duration::from_millis(500))?;
            config.exponential_backoff_multiplier = match map.get("factor") {
                None => 2.0,
                Some(value) => value
                    .as_f64()
                    .ok_or_else(|| format!("backoff factor {value} is not a number"))?,
            };
        }
        let layer = RetryLayer::try_new(config)
            .map_err(|e| e.to_string())?
            .named(name.to_owned());
        Ok(RetryFilter {
            layer,
            statuses,
            series,
            methods,
        })
    }

    fn applies_to(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Whether this answer (or a gateway error, `failed`) is worth another try.
    fn retry_on(&self, status: StatusCode, failed: bool) -> bool {
        failed || self.statuses.contains(&status) || self.series.contains(&(status.as_u16() / 100))
    }
}

/// A route's CircuitBreaker and Retry filters (the first of each), and whether it caches
/// request bodies for retries.
pub(crate) struct Guards<'a> {
    breaker: Option<&'a BreakerFilter>,
    retry: Option<&'a RetryFilter>,
    cache: bool,
}

/// What a guarded call came to.
pub(crate) enum Guarded<'a> {
    /// The answer to give.
    Answer(Response<Body>),
    /// The breaker's fallback to dispatch to (`forward:` path), and why.
    Fallback(&'a str, String),
}

impl<'a> Guards<'a> {
    /// The route's guards; `None` when it has neither a CircuitBreaker nor a Retry filter.
    pub(crate) fn of(filters: &'a [Filter]) -> Option<Self> {
        let mut guards = Guards {
            breaker: None,
            retry: None,
            cache: false,
        };
        for filter in filters {
            match filter {
                Filter::CircuitBreaker(b) if guards.breaker.is_none() => guards.breaker = Some(b),
                Filter::Retry(r) if guards.retry.is_none() => guards.retry = Some(r),
                Filter::CacheRequestBody => guards.cache = true,
                _ => {}
            }
        }
        (guards.breaker.is_some() || guards.retry.is_some()).then_some(guards)
    }

    /// Calls `send` (a request and the time it may take; `None`: the route's) through the
    /// breaker and the retries. `send` answers with the response and whether it is the
    /// gateway's own error answer (timeout, unreachable, no instance).
    pub(crate) async fn call<S, F>(
        &self,
        template: &Request<()>,
        body: Body,
        mut send: S,
    ) -> Guarded<'a>
    where
        S: FnMut(Request<Body>, Option<Duration>) -> F,
        F: Future<Output = (Response<Body>, bool)>,
    {
        let retry = self.retry.filter(|r| r.applies_to(template.method()));
        let mut policy: Option<RetryPolicy<AnyResponse, CloneRequest>> =
            retry.map(|r| r.layer.policy());
        // A body to send again: buffered when the route caches bodies, or empty.
        let mut body = Some(body);
        let mut buffered: Option<Bytes> = None;
        if retry.is_some() {
            let empty = body
                .as_ref()
                .is_some_and(|b| http_body::Body::size_hint(b).exact() == Some(0));
            if empty {
                buffered = Some(Bytes::new());
            } else if self.cache
                && let Some(whole) = body.take()
            {
                match Limited::new(whole, CACHE_LIMIT).collect().await {
                    Ok(collected) => buffered = Some(collected.to_bytes()),
                    Err(_) => {
                        return Guarded::Answer(error_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the request body is too large to cache for retries",
                        ));
                    }
                }
            }
        }
        loop {
            let next_body = match (&buffered, body.take()) {
                (Some(bytes), _) => Body::from(bytes.clone()),
                (None, Some(body)) => body,
                (None, None) => Body::empty(),
            };
            let request = copy(template).map(|()| next_body);
            let permit = match self.breaker {
                Some(b) => match b.breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(open) => return self.fall_back(open.to_string()),
                },
                None => None,
            };
            let (response, failed) = send(request, self.breaker.and_then(|b| b.timeout)).await;
            let status = response.status();
            if let (Some(permit), Some(b)) = (permit, self.breaker) {
                permit.complete(match b.fails(status, failed) {
                    true => Outcome::Failure,
                    false => Outcome::Success,
                });
            }
            if let (Some(r), Some(policy)) = (retry, policy.as_mut()) {
                let outcome = match r.retry_on(status, failed) {
                    true => Outcome::Failure,
                    false => Outcome::Success,
                };
                let asked = HttpStatus::retry_after_header(response.headers());
                let replayable = buffered.is_some();
                if let Some(wait) = policy.next_wait(outcome, false, replayable, asked) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            if let Some(b) = self.breaker
                && b.fails(status, failed)
                && b.fallback.is_some()
            {
                return self.fall_back(format!("the upstream answered {status}"));
            }
            return Guarded::Answer(response);
        }
    }

    /// The breaker's fallback, or 503 when it has none.
    fn fall_back(&self, reason: String) -> Guarded<'a> {
        match self.breaker.and_then(|b| b.fallback.as_deref()) {
            Some(path) => Guarded::Fallback(path, reason),
            None => Guarded::Answer(error_response(StatusCode::SERVICE_UNAVAILABLE, &reason)),
        }
    }
}

/// A copy of the request's head, to send again.
fn copy(template: &Request<()>) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = template.method().clone();
    *request.uri_mut() = template.uri().clone();
    *request.version_mut() = template.version();
    *request.headers_mut() = template.headers().clone();
    request
}
