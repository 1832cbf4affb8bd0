//! What the gateway tells about each request: its place in the trace (a span, or the trace
//! context alone, a child of the caller's and parent of the upstream call), its route's
//! metrics and its access log line.

pub(crate) mod access_log;
pub(crate) mod metrics;

use std::time::Instant;

use axum::body::Body;
use http::Response;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use msa_core::telemetry::propagation::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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

/// How the raw path traces a request: with a span when a subscriber records spans, or
/// with its trace context alone when that is all telemetry needs of it
/// ([`context_only`](msa_core::telemetry::propagation::context_only): W3C propagation and
/// no trace exporter), which spares each request a span's making, entering and closing.
/// Either way the upstream gets a `traceparent` whose parent is the gateway's, and the
/// access log the trace id.
pub(crate) enum RequestTrace {
    /// The gateway's span, a child of the caller's trace.
    Span(tracing::Span),
    /// The gateway's place in the trace, without a span.
    Context(TraceParent),
}

impl RequestTrace {
    /// The trace of a request that arrived with `head`, for `route`.
    pub(crate) fn begin(method: &http::Method, route: &str, path: &str, head: &RawHead) -> Self {
        if msa_core::telemetry::propagation::context_only() {
            let incoming = head.values(Name::Traceparent).next();
            return RequestTrace::Context(TraceParent::child_of(incoming));
        }
        let span = request_span(method, route, path);
        if !span.is_disabled() {
            let carrier = trace_context(head);
            if !carrier.is_empty() {
                let _ = span.set_parent(msa_core::telemetry::propagation::extract(&carrier));
            }
        }
        RequestTrace::Span(span)
    }

    /// The trace context fields for the upstream of a request that arrived with `head`;
    /// those that came in are not sent on beside them ([`TraceFields::replaces`]).
    pub(crate) fn fields(&self, head: &RawHead) -> TraceFields {
        use msa_core::telemetry::propagation::{inject, is_field};
        match self {
            RequestTrace::Context(parent) => {
                TraceFields::Parent(parent.header(), parent.continued())
            }
            RequestTrace::Span(span) if span.is_disabled() => TraceFields::None,
            RequestTrace::Span(span) => {
                // The propagator's fields as they came, then what it writes over them: as
                // on the header-map path (a field written empty is removed, one it does
                // not write goes on as it came).
                let mut carrier = HeaderMap::new();
                for (_, name, value) in head.fields() {
                    if is_field(name)
                        && let (Ok(name), Ok(value)) =
                            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                    {
                        carrier.append(name, value);
                    }
                }
                inject(&span.context(), &mut carrier);
                TraceFields::Carrier(carrier)
            }
        }
    }

    /// Records the answer's status on the span.
    pub(crate) fn answered(&self, status: http::StatusCode) {
        if let RequestTrace::Span(span) = self {
            span.record("http.response.status_code", status.as_u16());
        }
    }

    /// The trace id, as 32 hex digits.
    pub(crate) fn trace_id(&self) -> Option<String> {
        match self {
            RequestTrace::Context(parent) => Some(parent.trace_id().to_string()),
            RequestTrace::Span(span) if span.is_disabled() => None,
            RequestTrace::Span(span) => span.in_scope(msa_core::telemetry::current_trace_id),
        }
    }
}

/// The trace context fields a request is sent upstream with: see [`RequestTrace::fields`].
pub(crate) enum TraceFields {
    /// None: the fields that came in go on as they are.
    None,
    /// A `traceparent` value, and whether the `tracestate` that came in goes on with it
    /// (it does when the trace continues the caller's).
    Parent([u8; 55], bool),
    /// The propagator's fields, as it left them: they replace those that came in.
    Carrier(HeaderMap),
}

impl TraceFields {
    /// Whether a field that came in is left out, the gateway writing its own.
    pub(crate) fn replaces(&self, known: Name, name: &[u8]) -> bool {
        match self {
            TraceFields::None => false,
            TraceFields::Parent(_, continued) => {
                known == Name::Traceparent || (known == Name::Tracestate && !continued)
            }
            TraceFields::Carrier(_) => msa_core::telemetry::propagation::is_field(name),
        }
    }

    /// Writes the fields, each as `name: value\r\n`, with `push`.
    pub(crate) fn write(&self, mut push: impl FnMut(&[u8], &[u8])) {
        match self {
            TraceFields::None => {}
            TraceFields::Parent(value, _) => push(b"traceparent", value),
            TraceFields::Carrier(carrier) => {
                for (name, value) in carrier {
                    push(name.as_str().as_bytes(), value.as_bytes());
                }
            }
        }
    }
}

/// The trace context fields of a request as it arrived, for the propagator to read.
fn trace_context(head: &RawHead) -> HeaderMap {
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
