//! `/actuator/refresh`: re-read configuration on demand.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::BoxError;

/// Something `POST /actuator/refresh` re-runs: typically a config client that fetches
/// again and reports which keys changed.
///
/// Any `Fn() -> impl Future<Output = Result<Vec<String>, BoxError>>` closure is a hook.
///
/// # Examples
///
/// ```
/// use msa_core::actuator::Actuator;
///
/// let actuator = Actuator::new("orders").on_refresh("settings", || async {
///     // fetch, validate, swap ... then report what changed:
///     Ok(vec!["shop.price".to_owned()])
/// });
/// # let _ = actuator;
/// ```
pub trait RefreshHook: Send + Sync + 'static {
    /// Refreshes, returning the keys whose values changed. On error the hook must keep its
    /// last good state.
    fn refresh(&self) -> BoxFuture<'_, Result<Vec<String>, BoxError>>;
}

impl<F, Fut> RefreshHook for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<String>, BoxError>> + Send + 'static,
{
    fn refresh(&self) -> BoxFuture<'_, Result<Vec<String>, BoxError>> {
        Box::pin(self())
    }
}

/// A hook that failed during a refresh.
#[derive(Clone, Debug, Serialize)]
pub struct RefreshFailure {
    /// The hook's name.
    pub hook: String,
    /// Why.
    pub error: String,
}

/// Runs an actuator's refresh hooks, as `POST /actuator/refresh` does: for whoever else
/// triggers a refresh (a Spring Cloud Bus event); from
/// [`Actuator::refresher`](super::Actuator::refresher).
#[derive(Clone, Default)]
pub struct Refresher {
    hooks: Arc<[(String, Arc<dyn RefreshHook>)]>,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.hooks.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Refresher {
    pub(super) fn new(hooks: &[(String, Arc<dyn RefreshHook>)]) -> Self {
        Refresher {
            hooks: hooks.iter().cloned().collect(),
        }
    }

    /// Runs every hook in order: the keys that changed, and the hooks that failed (each
    /// keeping its last good state).
    pub async fn refresh(&self) -> (BTreeSet<String>, Vec<RefreshFailure>) {
        let mut changed = BTreeSet::new();
        let mut errors = Vec::new();
        for (name, hook) in self.hooks.iter() {
            match hook.refresh().await {
                Ok(keys) => changed.extend(keys),
                Err(error) => {
                    tracing::warn!(hook = %name, %error, "refresh failed; the last good state stays");
                    errors.push(RefreshFailure {
                        hook: name.clone(),
                        error: error.to_string(),
                    });
                }
            }
        }
        if !changed.is_empty() {
            tracing::info!(keys = ?changed, "refreshed");
        }
        (changed, errors)
    }
}
