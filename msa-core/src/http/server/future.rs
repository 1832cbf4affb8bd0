//! The response future of [`ServerTrace`](super::ServerTrace).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Method, Response, StatusCode};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::http::{record_error, record_status, seconds};
use crate::metrics::{HTTP_SERVER_REQUESTS, method_label, outcome};

pin_project! {
    /// Completes the request's span and records its duration when the response is ready.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        start: Instant,
        method: Method,
        route: Option<MatchedPath>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        span: Span,
        start: Instant,
        method: Method,
        route: Option<MatchedPath>,
    ) -> Self {
        ResponseFuture {
            inner,
            span,
            start,
            method,
            route,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let elapsed = seconds(this.start.elapsed());
        let status = match &result {
            Ok(response) => {
                record_status(this.span, response.status(), false);
                Some(response.status())
            }
            Err(error) => {
                record_error(this.span, error);
                None
            }
        };
        // Micrometer's `uri`: the route template; for unmatched requests, what became of
        // them.
        let uri = match (this.route.as_ref(), status) {
            (Some(route), _) => route.as_str(),
            (None, Some(StatusCode::NOT_FOUND)) => "NOT_FOUND",
            (None, Some(status)) if status.is_redirection() => "REDIRECTION",
            (None, _) => "UNKNOWN",
        };
        // A service that fails instead of answering is a 500 to its client.
        let (status, exception) = match status {
            Some(status) => (status, "none"),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "Error"),
        };
        HTTP_SERVER_REQUESTS
            .with_label_values(&[
                method_label(this.method),
                uri,
                status.as_str(),
                outcome(Some(status)),
                exception,
            ])
            .observe(elapsed);
        Poll::Ready(result)
    }
}
