//! `/actuator/refresh`: re-read configuration on demand.

use std::future::Future;

use futures_util::future::BoxFuture;

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
