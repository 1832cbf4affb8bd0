//! Resilience4j-shaped config sections: shared `configs` and per-downstream `instances`, read
//! as Spring writes them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The name of the shared config every instance starts from.
pub const DEFAULT_CONFIG: &str = "default";
/// The instance key that names another shared config to start from.
pub const BASE_CONFIG: &str = "base-config";

/// One layer's section, shaped like Resilience4j's Spring Boot properties:
///
/// ```yaml
/// configs:
///   default:                  # every instance starts here
///     failure-rate-threshold: 50
///   critical:
///     failure-rate-threshold: 20
/// instances:
///   payments:                 # default, then critical, then these keys
///     base-config: critical
///     wait-duration-in-open-state: 10s
///   inventory: {}             # default only
/// ```
///
/// An instance's settings are `configs.default`, overlaid by its `base-config` if it names
/// one, overlaid by its own keys; a name with no entry gets `configs.default`. It reads with
/// serde from any format, and through the `config` crate with
/// `settings.get::<Section>("resilience4j.circuitbreaker")`.
///
/// # Examples
///
/// ```
/// use msa_breaker::Section;
/// use msa_breaker::circuit_breaker::CircuitBreakerConfig;
///
/// let section: Section = serde_json::from_value(serde_json::json!({
///     "configs": { "default": { "failure-rate-threshold": 40 } },
///     "instances": { "payments": { "sliding-window-size": 20 } },
/// })).unwrap();
/// let payments: CircuitBreakerConfig = section.resolve("payments").unwrap();
/// assert_eq!((payments.failure_rate_threshold, payments.sliding_window_size), (40.0, 20));
/// let other: CircuitBreakerConfig = section.resolve("other").unwrap();
/// assert_eq!(other.sliding_window_size, 100);
/// ```
///
/// Keys read as Spring writes them: `failureRateThreshold` is `failure-rate-threshold`,
/// `backends` is `instances`. Resilience4j settings msa does not implement
/// (`register-health-indicator`, `record-exceptions`, `event-consumer-buffer-size`, …;
/// [`RESILIENCE4J_ONLY`]) are accepted with one warning each; any other unknown key is an
/// error naming it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Section {
    /// Shared settings by name; `default` applies to every instance.
    pub configs: BTreeMap<String, Map<String, Value>>,
    /// Settings per named instance.
    pub instances: BTreeMap<String, Map<String, Value>>,
}

/// Resilience4j's Spring Boot settings that msa does not implement: accepted, with one
/// warning each, so that a Spring `application.yml` reads unchanged. (Exceptions are Java
/// classes; health indicators and event buffers are Spring Boot Actuator's.)
pub const RESILIENCE4J_ONLY: &[&str] = &[
    "register-health-indicator",
    "allow-health-indicator-to-fail",
    "event-consumer-buffer-size",
    "record-exceptions",
    "ignore-exceptions",
    "retry-exceptions",
    "record-failure-predicate",
    "ignore-exception-predicate",
    "record-result-predicate",
    "retry-exception-predicate",
    "result-predicate",
    "writable-stack-trace-enabled",
    "enable-randomized-wait",
    "randomized-wait-factor",
    "fail-after-max-attempts",
    "interval-bi-function",
    "consume-result-before-retry-attempt",
    "cancel-running-future",
    "fair-call-handling-enabled",
    "subscribe-for-events",
    "ignore-class-bindings",
    "metrics-enabled",
];

/// Resilience4j's section-level settings (beside `configs` and `instances`) that msa does
/// not implement.
const SECTION_ONLY: &[&str] = &[
    "circuit-breaker-aspect-order",
    "retry-aspect-order",
    "rate-limiter-aspect-order",
    "bulkhead-aspect-order",
    "time-limiter-aspect-order",
    "metrics",
    "tags",
];

/// A key as Resilience4j's Spring Boot properties name it in kebab-case:
/// `failureRateThreshold` and `failure_rate_threshold` are `failure-rate-threshold`.
///
/// ```
/// assert_eq!(msa_breaker::section::kebab("waitDurationInOpenState"), "wait-duration-in-open-state");
/// assert_eq!(msa_breaker::section::kebab("max_attempts"), "max-attempts");
/// assert_eq!(msa_breaker::section::kebab("base-config"), "base-config");
/// ```
pub fn kebab(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('-') {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

/// Logs a Resilience4j setting msa does not implement, once per key and process.
fn warn_unimplemented(path: &str) {
    if msa_core::sync::first_time(&format!("resilience4j.{path}")) {
        tracing::warn!(key = %path, "a Resilience4j setting msa does not implement: ignored");
    }
}

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?.unwrap_or_default();
        let mut section = Section::default();
        for (key, value) in raw {
            let named =
                |value: Value| -> Result<BTreeMap<String, Map<String, Value>>, D::Error> {
                    match value {
                        // `instances:` with nothing under it.
                        Value::Null => Ok(BTreeMap::new()),
                        Value::String(s) if s.is_empty() => Ok(BTreeMap::new()),
                        value => serde_json::from_value::<
                            BTreeMap<String, Option<Map<String, Value>>>,
                        >(value)
                        .map(|m| {
                            m.into_iter()
                                .map(|(k, v)| (k, v.unwrap_or_default()))
                                .collect()
                        })
                        .map_err(|e| D::Error::custom(format!("{key}: {e}"))),
                    }
                };
            match kebab(&key).as_str() {
                "configs" => section.configs.extend(named(value)?),
                "instances" | "backends" => section.instances.extend(named(value)?),
                other if SECTION_ONLY.contains(&other) => warn_unimplemented(other),
                _ => {
                    return Err(D::Error::custom(format!(
                        "unknown field `{key}`, expected `configs` or `instances`"
                    )));
                }
            }
        }
        Ok(section)
    }
}

/// For each merged key, the part of the section it came from (`configs.default`, ...).
type Origins = BTreeMap<String, String>;

/// A setting that does not read, named by its full path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SectionError {
    /// Where: `instances.payments.wait-duration-in-open-state`, say.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

impl Section {
    /// The merged settings of instance `name`, as `T`.
    ///
    /// A Resilience4j setting msa does not implement is dropped with a warning; a number or
    /// boolean written as text (from an environment variable) is read as one.
    pub fn resolve<T: DeserializeOwned>(&self, name: &str) -> Result<T, SectionError> {
        let (mut merged, origin) = self.merged(name)?;
        loop {
            let error = match serde_path_to_error::deserialize(Value::Object(merged.clone())) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let key = error.path().to_string();
            let reason = error.into_inner().to_string();
            // An unknown field's name is in the message: "unknown field `x`, expected ...".
            let unknown = reason
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .filter(|field| RESILIENCE4J_ONLY.contains(field))
                .map(str::to_owned);
            if let Some(field) = unknown
                && merged.remove(&field).is_some()
            {
                let prefix = origin.get(&field).map_or("instances", String::as_str);
                warn_unimplemented(&format!("{prefix}.{field}"));
                continue;
            }
            if let Some(Value::String(text)) = merged.get(&key)
                && let Some(typed) = typed(text)
            {
                merged.insert(key, typed);
                continue;
            }
            // Name the part of the section the key came from.
            let path = match origin.get(&key) {
                Some(prefix) => format!("{prefix}.{key}"),
                // An unknown key: the error names it, the path names the instance.
                None if key == "." || key.is_empty() => format!("instances.{name}"),
                None => key,
            };
            return Err(SectionError { path, reason });
        }
    }

    /// Every instance name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }

    /// The merged settings of `name`, and for each key the part of the section it came from.
    fn merged(&self, name: &str) -> Result<(Map<String, Value>, Origins), SectionError> {
        let mut merged = Map::new();
        let mut origin = BTreeMap::new();
        let mut overlay = |from: &Map<String, Value>, prefix: String| {
            for (key, value) in from {
                let key = kebab(key);
                if key != BASE_CONFIG {
                    merged.insert(key.clone(), value.clone());
                    origin.insert(key, prefix.clone());
                }
            }
        };
        if let Some(default) = self.configs.get(DEFAULT_CONFIG) {
            overlay(default, format!("configs.{DEFAULT_CONFIG}"));
        }
        if let Some(instance) = self.instances.get(name) {
            let base = instance.iter().find(|(k, _)| kebab(k) == BASE_CONFIG);
            match base.map(|(_, v)| v) {
                None => {}
                Some(Value::String(base)) => match self.configs.get(base) {
                    Some(config) => overlay(config, format!("configs.{base}")),
                    None => {
                        return Err(SectionError {
                            path: format!("instances.{name}.{BASE_CONFIG}"),
                            reason: format!("no config named {base:?} under configs"),
                        });
                    }
                },
                Some(other) => {
                    return Err(SectionError {
                        path: format!("instances.{name}.{BASE_CONFIG}"),
                        reason: format!("expected the name of a config, found {other}"),
                    });
                }
            }
            overlay(instance, format!("instances.{name}"));
        }
        Ok((merged, origin))
    }
}

/// Text that reads as a number or boolean, as that value.
fn typed(text: &str) -> Option<Value> {
    let text = text.trim();
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(Value::from(n));
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::CircuitBreakerConfig;
    use std::time::Duration;

    fn section(json: Value) -> Section {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn instance_over_base_over_default() {
        let s = section(serde_json::json!({
            "configs": {
                "default": { "failure-rate-threshold": 40, "sliding-window-size": 50 },
                "critical": { "failure-rate-threshold": 20, "wait-duration-in-open-state": "5s" },
            },
            "instances": { "payments": { "base-config": "critical", "wait-duration-in-open-state": 2000 } },
        }));
        let c: CircuitBreakerConfig = s.resolve("payments").unwrap();
        assert_eq!(c.failure_rate_threshold, 20.0);
        assert_eq!(c.sliding_window_size, 50);
        assert_eq!(c.wait_duration_in_open_state, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_full_path() {
        let s = section(serde_json::json!({
            "configs": { "default": { "wait-duration-in-open-state": "soon" } },
        }));
        let e = s.resolve::<CircuitBreakerConfig>("other").unwrap_err();
        assert_eq!(e.path, "configs.default.wait-duration-in-open-state");
        assert!(e.reason.contains("soon"), "{e}");

        // One error per section, so that key order cannot decide which is reported.
        let s = section(serde_json::json!({
            "instances": { "payments": { "failure-rate": 10 } },
        }));
        let e = s.resolve::<CircuitBreakerConfig>("payments").unwrap_err();
        assert!(e.reason.contains("failure-rate"), "{e}");
        assert_eq!(e.path, "instances.payments.failure-rate");

        let s =
            section(serde_json::json!({ "instances": { "payments": { "base-config": "nope" } } }));
        let e = s.resolve::<CircuitBreakerConfig>("payments").unwrap_err();
        assert_eq!(e.path, "instances.payments.base-config");
    }

    #[test]
    fn springs_application_yml_reads_unchanged() {
        // As Resilience4j's Spring Boot documentation writes it.
        let s = section(serde_json::json!({
            "configs": { "default": {
                "registerHealthIndicator": true,
                "slidingWindowSize": 10,
                "minimumNumberOfCalls": 5,
                "permittedNumberOfCallsInHalfOpenState": 3,
                "automaticTransitionFromOpenToHalfOpenEnabled": true,
                "waitDurationInOpenState": "5s",
                "failureRateThreshold": 50,
                "eventConsumerBufferSize": 10,
                "recordExceptions": ["org.springframework.web.client.HttpServerErrorException"],
                "ignoreExceptions": ["io.github.robwin.exception.BusinessException"],
            } },
            "backends": { "backendA": { "baseConfig": "default" },
                          "backendB": { "slidingWindowSize": "20", "record-exceptions": [] } },
            "circuitBreakerAspectOrder": 1,
        }));
        let a: CircuitBreakerConfig = s.resolve("backendA").unwrap();
        assert_eq!(a.sliding_window_size, 10);
        assert_eq!(a.wait_duration_in_open_state, Duration::from_secs(5));
        assert!(a.automatic_transition_from_open_to_half_open_enabled);
        let b: CircuitBreakerConfig = s.resolve("backendB").unwrap();
        assert_eq!((b.sliding_window_size, b.minimum_number_of_calls), (20, 5));

        // A key Resilience4j does not know either is still an error, named.
        let s = section(serde_json::json!({ "instances": { "a": { "failureRateTreshold": 5 } } }));
        let e = s.resolve::<CircuitBreakerConfig>("a").unwrap_err();
        assert_eq!(e.path, "instances.a.failure-rate-treshold");
        let e =
            serde_json::from_value::<Section>(serde_json::json!({ "instance": {} })).unwrap_err();
        assert!(e.to_string().contains("unknown field `instance`"), "{e}");
        // Text that is not a number stays an error.
        let s =
            section(serde_json::json!({ "instances": { "a": { "slidingWindowSize": "ten" } } }));
        assert!(s.resolve::<CircuitBreakerConfig>("a").is_err());
    }
}
