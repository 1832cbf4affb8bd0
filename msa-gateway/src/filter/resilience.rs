//! The filters that wrap the upstream call: CircuitBreaker (with `fallbackUri`), Retry and
//! CacheRequestBody.

use std::time::Duration;

use http::{Method, StatusCode};
use msa_breaker::circuit_breaker::{CircuitBreaker, CircuitBreakerRegistry};

use crate::config::Args;

/// CircuitBreaker's arguments, with its breaker from the gateway's registry (kept across
/// reloads, by name).
#[derive(Debug)]
pub(crate) struct BreakerFilter {
    pub(crate) breaker: CircuitBreaker,
    /// `forward:/path` to dispatch to when the call fails or the breaker is open.
    pub(crate) fallback: Option<String>,
    /// Statuses that count as failures (besides errors and timeouts).
    pub(crate) statuses: Vec<StatusCode>,
}

impl BreakerFilter {
    pub(crate) fn build(args: &Args, registry: &CircuitBreakerRegistry) -> Result<Self, String> {
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
        let breaker = registry.get(&name).map_err(|e| e.to_string())?;
        Ok(BreakerFilter {
            breaker,
            fallback,
            statuses,
        })
    }
}

/// Retry's arguments, Spring's defaults: 3 retries of GET on 5xx answers and errors, no
/// backoff unless one is given.
#[derive(Debug)]
pub(crate) struct RetryFilter {
    pub(crate) retries: u32,
    statuses: Vec<StatusCode>,
    series: Vec<u16>,
    methods: Vec<Method>,
    backoff: Option<Backoff>,
}

#[derive(Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    factor: u32,
}

impl RetryFilter {
    pub(crate) fn build(args: &Args) -> Result<Self, String> {
        let retries = match args.text("retries", 0)? {
            Some(n) => n
                .parse()
                .map_err(|_| format!("retries {n:?} is not a whole number"))?,
            None => 3,
        };
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
        let backoff = match args.map("backoff") {
            None => None,
            Some(map) => {
                let millis = |key: &str, default: u64| -> Result<Duration, String> {
                    match map.get(key) {
                        None => Ok(Duration::from_millis(default)),
                        Some(value) => msa_core::duration::deserialize(value.clone())
                            .map_err(|e| format!("backoff {key}: {e}")),
                    }
                };
                Some(Backoff {
                    first: millis("firstBackoff", 5)?,
                    max: millis("maxBackoff", 500)?,
                    factor: map
                        .get("factor")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(2) as u32,
                })
            }
        };
        Ok(RetryFilter {
            retries,
            statuses,
            series,
            methods,
            backoff,
        })
    }

    pub(crate) fn applies_to(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Whether this answer (or a gateway error, `failed`) is worth another try.
    pub(crate) fn retry_on(&self, status: StatusCode, failed: bool) -> bool {
        failed || self.statuses.contains(&status) || self.series.contains(&(status.as_u16() / 100))
    }

    /// The pause before retry number `attempt` (0-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        match &self.backoff {
            None => Duration::ZERO,
            Some(b) => b
                .first
                .saturating_mul(b.factor.max(1).saturating_pow(attempt))
                .min(b.max),
        }
    }
}
