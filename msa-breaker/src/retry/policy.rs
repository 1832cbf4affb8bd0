use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::{HasherRng, Rng};

use super::RetryConfig;
use crate::{BoxError, Classify, Outcome};

/// Decides whether a request can be sent again, and makes the copy.
pub trait Replay<Req>: Clone + Send + Sync + 'static {
    /// A copy of `req` to send again, or `None` when it cannot be replayed.
    fn replay(&self, req: &Req) -> Option<Req>;

    /// Whether sending `req` twice is safe.
    fn idempotent(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

/// Replays any `Clone` request, and deems every request idempotent.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Replays HTTP requests whose body is `Clone` (buffer a streaming body first), and deems
/// idempotent the methods HTTP says are: `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpReplay {
    any_method: bool,
}

impl HttpReplay {
    /// `any_method` retries `POST` and `PATCH` too.
    pub fn new(any_method: bool) -> Self {
        HttpReplay { any_method }
    }
}

impl<B: Clone> Replay<http::Request<B>> for HttpReplay {
    fn replay(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        Some(req.clone())
    }

    fn idempotent(&self, req: &http::Request<B>) -> bool {
        self.any_method
            || matches!(
                *req.method(),
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
    }
}

pub(super) struct Shared {
    pub(super) config: RetryConfig,
    pub(super) budget: TpsBudget,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// msa's retry policy for tower's `Retry`; see the [module docs](super).
pub struct RetryPolicy<C, R> {
    shared: Arc<Shared>,
    /// The `name` label of `resilience4j_retry_calls_total`; unnamed retries are not counted.
    name: Option<Arc<str>>,
    classify: C,
    replay: R,
    /// Retries made for the current request.
    retries: u32,
    rng: HasherRng,
}

impl<C: Clone, R: Clone> Clone for RetryPolicy<C, R> {
    fn clone(&self) -> Self {
        // Each request starts with no retries and its own random stream.
        RetryPolicy {
            shared: Arc::clone(&self.shared),
            name: self.name.clone(),
            classify: self.classify.clone(),
            replay: self.replay.clone(),
            retries: 0,
            rng: HasherRng::new(),
        }
    }
}

impl<C, R> fmt::Debug for RetryPolicy<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.shared.config)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl<C, R> RetryPolicy<C, R> {
    pub(super) fn new(shared: Arc<Shared>, classify: C, replay: R) -> Self {
        RetryPolicy {
            shared,
            name: None,
            classify,
            replay,
            retries: 0,
            rng: HasherRng::new(),
        }
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(super) fn with<C2, R2>(self, classify: C2, replay: R2) -> RetryPolicy<C2, R2> {
        RetryPolicy {
            name: self.name,
            ..RetryPolicy::new(self.shared, classify, replay)
        }
    }

    pub(super) fn named(mut self, name: Arc<str>) -> Self {
        self.name = Some(name);
        self
    }

    /// The retry's settings.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// Judges one attempt of a call, for callers that drive attempts themselves (the
    /// tower [`Policy`] does this after every attempt): how long to wait before the next
    /// attempt, or `None` when the call is over — it did not fail, the breaker is open
    /// (`circuit_open`), the request may not be sent twice (`replayable`), the attempts
    /// or the budget are spent, or `retry_after` asks for more than `max-retry-after`.
    /// Every call deposits in the budget once; every retry withdraws.
    pub fn next_wait(
        &mut self,
        outcome: Outcome,
        circuit_open: bool,
        replayable: bool,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let wait = self.decide(outcome, circuit_open, replayable, retry_after);
        if wait.is_none()
            && let Some(name) = &self.name
        {
            crate::metrics::retry_call(name, outcome != Outcome::Failure, self.retries);
        }
        wait
    }

    fn decide(
        &mut self,
        outcome: Outcome,
        circuit_open: bool,
        replayable: bool,
        asked: Option<Duration>,
    ) -> Option<Duration> {
        if self.retries == 0 {
            // Every request (not every retry) adds to the budget.
            self.shared.budget.deposit();
        }
        if outcome != Outcome::Failure {
            return None;
        }
        if circuit_open {
            // The breaker stays open for its wait: trying again now only spends budget.
            return None;
        }
        if self.retries + 1 >= self.shared.config.max_attempts || !replayable {
            return None;
        }
        let wait = self.wait(self.retries + 1, asked)?;
        if !self.shared.budget.withdraw() {
            // Counted as `failed_without_retry` (or `failed_with_retry`) in
            // `resilience4j_retry_calls_total`: a warning per call would flood the logs in
            // the very outage the budget is for.
            tracing::debug!("retry budget exhausted: not retrying");
            return None;
        }
        self.retries += 1;
        Some(wait)
    }

    fn wait(&mut self, retry: u32, asked: Option<Duration>) -> Option<Duration> {
        let config = &self.shared.config;
        let mut wait = config.backoff(retry);
        if config.enable_randomized_wait && config.randomized_wait_factor > 0.0 {
            let spread = config.randomized_wait_factor * (2.0 * self.rng.next_f64() - 1.0);
            wait = wait.mul_f64((1.0 + spread).max(0.0));
        }
        match asked {
            Some(asked) if config.honor_retry_after => {
                if asked > config.max_retry_after {
                    tracing::debug!(
                        ?asked,
                        "not retrying: Retry-After is longer than max-retry-after"
                    );
                    return None;
                }
                Some(wait.max(asked))
            }
            _ => Some(wait),
        }
    }
}

impl<C, R, Req, Res> Policy<Req, Res, BoxError> for RetryPolicy<C, R>
where
    C: Classify<Res>,
    R: Replay<Req>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        let outcome = self.classify.classify(result.as_ref());
        let open =
            matches!(result, Err(error) if error.is::<crate::circuit_breaker::CircuitOpen>());
        let asked = result
            .as_ref()
            .ok()
            .and_then(|res| self.classify.retry_after(res));
        let replayable = self.replay.idempotent(req);
        self.next_wait(outcome, open, replayable, asked)
            .map(tokio::time::sleep)
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        self.replay.replay(req)
    }
}
