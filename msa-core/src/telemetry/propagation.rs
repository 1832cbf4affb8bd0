//! W3C Trace Context and Baggage propagation over HTTP headers.
//!
//! [`init`](super::Telemetry::init) installs a composite propagator for `traceparent`,
//! `tracestate` and `baggage` as OpenTelemetry's global propagator; [`extract`] and
//! [`inject`] go through that global, so a service that installs another propagator (B3, say)
//! gets it in msa's layers too.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The W3C propagators msa installs: Trace Context (`traceparent`, `tracestate`) and Baggage.
pub fn w3c_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Reads a remote context (trace parent, trace state, baggage) from request headers.
///
/// Headers that are missing or malformed yield an empty context, so a new trace starts.
///
/// # Examples
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
///
/// opentelemetry::global::set_text_map_propagator(msa_core::telemetry::propagation::w3c_propagator());
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let cx = msa_core::telemetry::propagation::extract(&headers);
/// assert_eq!(
///     cx.span().span_context().trace_id().to_string(),
///     "4bf92f3577b34da6a3ce929d0e0e4736"
/// );
/// ```
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes `cx` (trace parent, trace state, baggage) into outgoing request headers.
///
/// Nothing is written for a context without a valid span, so no `traceparent` of zeros ever
/// leaves the process.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    if !cx.span().span_context().is_valid() && cx.baggage().is_empty() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers))
    });
}

use opentelemetry::baggage::BaggageExt as _;

/// An [`Extractor`] over an [`http::HeaderMap`].
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// An [`Injector`] over an [`http::HeaderMap`]; values that are not valid header values are
/// skipped.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
