//! Resilience4j-shaped config sections: shared `configs` and per-downstream `instances`.

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Section {
    /// Shared settings by name; `default` applies to every instance.
    pub configs: BTreeMap<String, Map<String, Value>>,
    /// Settings per named instance.
    pub instances: BTreeMap<String, Map<String, Value>>,
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
    pub fn resolve<T: DeserializeOwned>(&self, name: &str) -> Result<T, SectionError> {
        let (merged, origin) = self.merged(name)?;
        serde_path_to_error::deserialize(Value::Object(merged)).map_err(|error| {
            let key = error.path().to_string();
            // Name the part of the section the key came from.
            let path = match origin.get(&key) {
                Some(prefix) => format!("{prefix}.{key}"),
                // An unknown key: the error names it, the path names the instance.
                None if key == "." || key.is_empty() => format!("instances.{name}"),
                None => key,
            };
            SectionError {
                path,
                reason: error.into_inner().to_string(),
            }
        })
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
                if key != BASE_CONFIG {
                    merged.insert(key.clone(), value.clone());
                    origin.insert(key.clone(), prefix.clone());
                }
            }
        };
        if let Some(default) = self.configs.get(DEFAULT_CONFIG) {
            overlay(default, format!("configs.{DEFAULT_CONFIG}"));
        }
        if let Some(instance) = self.instances.get(name) {
            match instance.get(BASE_CONFIG) {
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
}
