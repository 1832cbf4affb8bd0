//! The server side: continue the caller's trace, a span per request, and request metrics.

pub mod future;
mod layer;

pub use self::layer::ServerLayer;

use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response};
use tower::Service;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use self::future::ResponseFuture;
use crate::telemetry::propagation;

/// Traces and measures every request to the inner service; see [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S> ServerTrace<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ServerTrace { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        let span = tracing::info_span!(
            target: "msa::http::server",
            "HTTP request",
            otel.name = %SpanName(&method, route.as_ref()),
            otel.kind = "server",
            http.request.method = method.as_str(),
            http.route = route.as_ref().map(MatchedPath::as_str),
            url.path = req.uri().path(),
            http.response.status_code = Empty,
            otel.status_code = Empty,
            error.type = Empty,
        );
        if !span.is_disabled() && carries_context(req.headers()) {
            let parent = propagation::extract(req.headers());
            // Fails only when no OpenTelemetry layer is installed: then there is no trace.
            let _ = span.set_parent(parent);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(inner, span, start, method, route)
    }
}

/// `{method} {route}`, or `{method}` without a route, formatted only when a subscriber
/// records the span.
struct SpanName<'a>(&'a http::Method, Option<&'a MatchedPath>);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(route) => write!(f, "{} {}", self.0, route.as_str()),
            None => f.write_str(self.0.as_str()),
        }
    }
}

/// Whether the request carries any context worth extracting; without it, extraction would
/// only find nothing, slowly.
fn carries_context(headers: &http::HeaderMap) -> bool {
    headers.contains_key("traceparent") || headers.contains_key("baggage")
}
