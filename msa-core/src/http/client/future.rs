//! The response future of [`ClientTrace`](super::ClientTrace).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::uri::Authority;
use http::{Method, Response};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::http::{ERROR_STATUS_LABEL, record_error, record_status, seconds};
use crate::metrics::{HTTP_CLIENT_REQUESTS, method_label, outcome};

pin_project! {
    /// Completes the client span and records the request's duration.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        start: Instant,
        method: Method,
        authority: Option<Authority>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        span: Span,
        start: Instant,
        method: Method,
        authority: Option<Authority>,
    ) -> Self {
        ResponseFuture {
            inner,
            span,
            start,
            method,
            authority,
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
        let status = match &result {
            Ok(response) => {
                record_status(this.span, response.status(), true);
                Some(response.status())
            }
            Err(error) => {
                record_error(this.span, error);
                None
            }
        };
        let host = this.authority.as_ref().map_or("", Authority::host);
        let (status_label, exception) = match &status {
            Some(status) => (status.as_str(), "none"),
            None => (ERROR_STATUS_LABEL, "IOException"),
        };
        HTTP_CLIENT_REQUESTS
            .with_label_values(&[
                method_label(this.method),
                "none",
                status_label,
                outcome(status),
                crate::metrics::client_name(host),
                exception,
            ])
            .observe(seconds(this.start.elapsed()));
        Poll::Ready(result)
    }
}
