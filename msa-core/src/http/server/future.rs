//! The response future of [`ServerTrace`](super::ServerTrace).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Method, Response, StatusCode};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::http::{ERROR_STATUS_LABEL, record_error, record_status, seconds};
use crate::metrics::{HTTP_SERVER_REQUESTS, method_label};

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
        let route = match (this.route.as_ref(), status) {
            (Some(route), _) => route.as_str(),
            (None, Some(StatusCode::NOT_FOUND)) => "NOT_FOUND",
            (None, _) => "UNKNOWN",
        };
        let status = status
            .as_ref()
            .map_or(ERROR_STATUS_LABEL, StatusCode::as_str);
        HTTP_SERVER_REQUESTS
            .with_label_values(&[method_label(this.method), route, status])
            .observe(elapsed);
        Poll::Ready(result)
    }
}
