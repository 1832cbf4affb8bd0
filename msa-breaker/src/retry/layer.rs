use std::sync::Arc;

use tower::Layer;
use tower::retry::Retry;
use tower::retry::budget::TpsBudget;

use super::policy::{CloneRequest, HttpReplay, RetryPolicy, Shared};
use super::{InvalidRetryConfig, RetryConfig};
use crate::{AnyResponse, BoxErrors, HttpStatus};

/// A [`Layer`] that retries failed calls; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct RetryLayer<C = AnyResponse, R = CloneRequest> {
    policy: RetryPolicy<C, R>,
}

impl RetryLayer {
    /// Retries any failed call of a service whose requests are `Clone`.
    ///
    /// # Panics
    ///
    /// When `config` is out of range; use [`RetryLayer::try_new`] for config from outside
    /// the program.
    pub fn new(config: RetryConfig) -> Self {
        match Self::try_new(config) {
            Ok(layer) => layer,
            Err(error) => panic!("{error}"),
        }
    }

    /// Retries any failed call of a service whose requests are `Clone`.
    pub fn try_new(config: RetryConfig) -> Result<Self, InvalidRetryConfig> {
        config.validate()?;
        let budget = TpsBudget::new(
            config.budget.ttl,
            config.budget.min_retries_per_second,
            config.budget.retry_percent / 100.0,
        );
        Ok(RetryLayer {
            policy: RetryPolicy::new(
                Arc::new(Shared { config, budget }),
                AnyResponse,
                CloneRequest,
            ),
        })
    }

    /// Retries HTTP calls: 5xx, 429 and errors, idempotent methods only (unless
    /// `retry-non-idempotent`), honouring `Retry-After`.
    pub fn http(self) -> RetryLayer<HttpStatus, HttpReplay> {
        let retry_non_idempotent = self.policy.shared().config.retry_non_idempotent;
        RetryLayer {
            policy: self
                .policy
                .with(HttpStatus, HttpReplay::new(retry_non_idempotent)),
        }
    }
}

impl<C: Clone, R: Clone> RetryLayer<C, R> {
    /// Counts the layer's calls under `name` in `resilience4j_retry_calls_total`.
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        RetryLayer {
            policy: self.policy.named(name.into()),
        }
    }

    /// A policy for one call, for callers that drive attempts themselves
    /// ([`RetryPolicy::next_wait`]); it shares this layer's budget.
    pub fn policy(&self) -> RetryPolicy<C, R> {
        self.policy.clone()
    }
}

impl<C, R> RetryLayer<C, R> {
    /// Classifies results with `classify` and replays requests with `replay` instead.
    pub fn with<C2, R2>(self, classify: C2, replay: R2) -> RetryLayer<C2, R2> {
        RetryLayer {
            policy: self.policy.with(classify, replay),
        }
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<RetryPolicy<C, R>, BoxErrors<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(self.policy.clone(), BoxErrors(inner))
    }
}
