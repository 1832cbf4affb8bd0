//! What the gateway tells about each request: its span (a child of the caller's trace,
//! parent of the upstream call), its route's metrics and its access log line.

pub(crate) mod access_log;
pub(crate) mod metrics;

use std::time::Instant;

use axum::body::Body;
use http::Response;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::h1::wire::{Name, RawHead};

/// The gateway's span for a request: a child of the caller's trace, parent of the
/// upstream call.
pub(crate) fn request_span(method: &http::Method, route: &str, path: &str) -> tracing::Span {
    tracing::info_span!(
        target: "msa_gateway::proxy",
        "gateway request",
        otel.name = %SpanName(method, route),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    )
}

/// The trace context fields of a request as it arrived, for the propagator to read.
pub(crate) fn trace_context(head: &RawHead) -> HeaderMap {
    let mut carrier = HeaderMap::new();
    if !head.has(Name::Traceparent) && !head.has(Name::Baggage) {
        return carrier;
    }
    for (known, _, value) in head.fields() {
        let name = match known {
            Name::Traceparent => "traceparent",
            Name::Tracestate => "tracestate",
            Name::Baggage => "baggage",
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            carrier.append(HeaderName::from_static(name), value);
        }
    }
    carrier
}

/// `answer`, counted as an answer no route gave.
pub(crate) fn unrouted(
    method: &http::Method,
    answer: Response<Body>,
    started: Instant,
) -> Response<Body> {
    crate::observe::metrics::observe_unrouted(method, answer.status(), started);
    answer
}

/// `{method} {route id}`, formatted only when a subscriber records the span.
struct SpanName<'a>(&'a http::Method, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}
