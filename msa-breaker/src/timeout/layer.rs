use std::sync::Arc;

use tower::Layer;

use super::error::Elapsed;
use super::{Timeout, TimeoutConfig};
use crate::metrics::TimeKind;

/// A [`Layer`] that cancels calls taking longer than `timeout-duration`.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    config: TimeoutConfig,
    name: Option<Arc<str>>,
}

impl TimeoutLayer {
    /// A timeout layer.
    pub fn new(config: TimeoutConfig) -> Self {
        TimeoutLayer { config, name: None }
    }

    /// Counts the layer's calls under `name` in `resilience4j_timelimiter_calls_total`.
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long a call may take.
    pub fn duration(&self) -> std::time::Duration {
        self.config.timeout_duration
    }

    /// Runs `call` within the time limit, for callers that drive calls themselves:
    /// its result, or [`Elapsed`] (and `call` dropped) when it takes longer.
    pub async fn run<T, E>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Elapsed> {
        let limit = self.config.timeout_duration;
        let result = tokio::time::timeout(limit, call).await;
        if let Some(name) = &self.name {
            let kind = match &result {
                Ok(Ok(_)) => TimeKind::Successful,
                Ok(Err(_)) => TimeKind::Failed,
                Err(_) => TimeKind::Timeout,
            };
            crate::metrics::timelimiter_call(name, kind);
        }
        result.map_err(|_| Elapsed(limit))
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            name: self.name.clone(),
            ..Timeout::new(inner, self.config.timeout_duration)
        }
    }
}
