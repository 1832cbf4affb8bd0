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
            Ok(response) if response.status().is_server_error() => Outcome::Failure,
            Ok(response) if response.status().is_client_error() => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
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
