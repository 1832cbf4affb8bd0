use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{CircuitBreaker, CircuitBreakerConfig};
use crate::{Section, SectionError};

/// Named circuit breakers from one config [`Section`], like Resilience4j's
/// `CircuitBreakerRegistry`: every [`get`](Self::get) of a name returns the same breaker,
/// so every layer built for a downstream shares one state.
///
/// # Examples
///
/// ```
/// use msa_breaker::Section;
/// use msa_breaker::circuit_breaker::{CircuitBreakerLayer, CircuitBreakerRegistry};
///
/// let section: Section = serde_json::from_value(serde_json::json!({
///     "instances": { "payments": { "failure-rate-threshold": 25 } }
/// })).unwrap();
/// let registry = CircuitBreakerRegistry::new(section).unwrap();
/// let payments = registry.get("payments").unwrap();
/// assert_eq!(payments.config().failure_rate_threshold, 25.0);
/// let layer = CircuitBreakerLayer::from_breaker(payments);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CircuitBreakerRegistry {
    inner: Arc<Mutex<State>>,
}

struct State {
    section: Section,
    breakers: BTreeMap<String, CircuitBreaker>,
}

impl fmt::Debug for CircuitBreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("CircuitBreakerRegistry")
            .field("breakers", &state.breakers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn invalid(name: &str, error: super::InvalidConfig) -> SectionError {
    SectionError {
        path: format!("instances.{name}.{}", error.key),
        reason: error.reason,
    }
}

fn resolve(section: &Section, name: &str) -> Result<CircuitBreakerConfig, SectionError> {
    let config: CircuitBreakerConfig = section.resolve(name)?;
    config.validate().map_err(|e| invalid(name, e))?;
    Ok(config)
}

impl CircuitBreakerRegistry {
    /// A registry for `section`; every instance it names must resolve to a valid config.
    pub fn new(section: Section) -> Result<Self, SectionError> {
        for name in section.names() {
            resolve(&section, name)?;
        }
        resolve(&section, "")?; // configs.default on its own
        Ok(CircuitBreakerRegistry {
            inner: Arc::new(Mutex::new(State {
                section,
                breakers: BTreeMap::new(),
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        msa_core::sync::lock(&self.inner)
    }

    /// The breaker named `name`, made on first use from its settings (`configs.default`
    /// for a name the section does not list).
    pub fn get(&self, name: &str) -> Result<CircuitBreaker, SectionError> {
        let mut state = self.lock();
        if let Some(breaker) = state.breakers.get(name) {
            return Ok(*breaker);
        }
        let config = resolve(&state.section, name)?;
        let breaker = CircuitBreaker::new(name, config).map_err(|e| invalid(name, e))?;
        state.breakers.insert(name.to_owned(), breaker);
        Ok(breaker)
    }

    /// Every breaker made so far, by name.
    pub fn breakers(&self) -> Vec<(String, CircuitBreaker)> {
        self.lock()
            .breakers
            .iter()
            .map(|(name, breaker)| (name.clone(), *breaker))
            .collect()
    }

    /// Applies a new section to every live breaker (see
    /// [`CircuitBreaker::update_config`]). All or nothing: if any breaker's new settings do
    /// not resolve or validate, nothing changes and the error says where.
    pub fn update(&self, section: Section) -> Result<(), SectionError> {
        let mut state = self.lock();
        let mut updates = Vec::with_capacity(state.breakers.len());
        for (name, breaker) in &state.breakers {
            updates.push((*breaker, resolve(&section, name)?));
        }
        for name in section.names() {
            resolve(&section, name)?;
        }
        for (breaker, config) in updates {
            breaker
                .update_config(config)
                .map_err(|e| invalid(breaker.name(), e))?;
        }
        state.section = section;
        Ok(())
    }
}
