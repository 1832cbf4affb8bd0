//! Deciding whether a call succeeded, failed, or does not count.

use std::fmt;

use crate::BoxError;

/// What a finished call counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Not recorded at all (Resilience4j's ignored exceptions).
    Ignored,
}

/// Classifies the result of a call made through a resilience layer.
///
/// Implemented by [`AnyResponse`] (every response succeeds, every error fails),
/// [`HttpStatus`] (5xx fails, 4xx is ignored), and any
/// `Fn(Result<&Res, &BoxError>) -> Outcome` closure.
pub trait Classify<Res>: Clone + Send + Sync + 'static {
    /// Classifies one result.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;

    /// How long the response asks the caller to wait before trying again (HTTP's
    /// `Retry-After`), for the retry layer. `None` by default.
    fn retry_after(&self, response: &Res) -> Option<std::time::Duration> {
        let _ = response;
        None
    }
}

/// Every response is a success and every error a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyResponse;

impl<Res> Classify<Res> for AnyResponse {
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// HTTP responses by status: 5xx is a failure, 4xx is ignored (the caller's fault, not the
/// downstream's), anything else a success; errors (connection refused, timeouts) fail.
///
/// For retries, 429 Too Many Requests also counts as a failure (the same call may succeed
/// later), and `Retry-After` (seconds or an HTTP date) is read from the response.
///
/// # Examples
///
/// ```
/// use msa_breaker::{Classify, HttpStatus, Outcome};
///
/// let ok = http::Response::builder().status(503).body(()).unwrap();
/// assert_eq!(HttpStatus.classify(Ok(&ok)), Outcome::Failure);
/// let missing = http::Response::builder().status(404).body(()).unwrap();
/// assert_eq!(HttpStatus.classify(Ok(&missing)), Outcome::Ignored);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpStatus;

impl<B> Classify<http::Response<B>> for HttpStatus {
    fn classify(&self, result: Result<&http::Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(response) => HttpStatus::of(response.status()),
            Err(_) => Outcome::Failure,
        }
    }

    fn retry_after(&self, response: &http::Response<B>) -> Option<std::time::Duration> {
        HttpStatus::retry_after_header(response.headers())
    }
}

impl HttpStatus {
    /// A response status's outcome: 5xx and 429 fail, other 4xx are ignored (the
    /// caller's fault), the rest succeed.
    pub fn of(status: http::StatusCode) -> Outcome {
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            Outcome::Failure
        } else if status.is_client_error() {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }

    /// The wait a `Retry-After` header asks for (seconds or an HTTP date).
    pub fn retry_after_header(headers: &http::HeaderMap) -> Option<std::time::Duration> {
        let value = headers
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(std::time::Duration::from_secs(seconds));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    }
}

/// A closure as a classifier; see [`classify_fn`].
#[derive(Clone)]
pub struct ClassifyFn<F>(F);

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClassifyFn")
    }
}

/// A classifier from a closure.
///
/// # Examples
///
/// ```
/// use msa_breaker::{Classify, Outcome, classify_fn};
///
/// // Only errors count; an empty answer is a success too.
/// let classify = classify_fn(|result: Result<&Option<u32>, &msa_breaker::BoxError>| match result {
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// });
/// assert_eq!(classify.classify(Ok(&None)), Outcome::Success);
/// ```
pub fn classify_fn<F, Res>(f: F) -> ClassifyFn<F>
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome + Clone + Send + Sync + 'static,
{
    ClassifyFn(f)
}

impl<F, Res> Classify<Res> for ClassifyFn<F>
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome + Clone + Send + Sync + 'static,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        (self.0)(result)
    }
}
