//! Tracing and metrics for HTTP servers and clients, as tower layers.
//!
//! - [`ServerLayer`] continues the caller's trace (W3C `traceparent`, `tracestate`,
//!   `baggage`), opens a server span per request named `{method} {route}` after
//!   OpenTelemetry's HTTP semantic conventions, and records
//!   `http_server_requests_seconds{method, route, status}`.
//! - [`ClientLayer`] opens a client span per outgoing request, injects its context into the
//!   request headers, and records `http_client_requests_seconds{method, host, status}`.
//! - With the `reqwest-middleware` feature, [`TraceMiddleware`] does the same for reqwest.
//!
//! Both layers work with any `tower::Service` over `http::Request`/`http::Response`: axum
//! routers, hyper servers through `hyper_util::service::TowerToHyperService`, and
//! `hyper_util`'s pooled client.

mod auth;
pub mod client;
#[cfg(feature = "reqwest-middleware")]
mod reqwest;
pub mod server;

pub use self::auth::Authorization;
pub use self::client::ClientLayer;
#[cfg(feature = "reqwest-middleware")]
pub use self::reqwest::TraceMiddleware;
pub use self::server::ServerLayer;

use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};
use tracing::Span;

/// The `status` label of an outgoing request that ended in an error instead of a
/// response (Spring Boot's).
pub const ERROR_STATUS_LABEL: &str = "CLIENT_ERROR";

/// Opens the client span for one outgoing request.
pub(crate) fn client_span(
    method: &Method,
    host: &str,
    port: Option<u16>,
    url: &dyn std::fmt::Display,
) -> Span {
    tracing::info_span!(
        target: "msa::http::client",
        "HTTP client request",
        otel.name = method.as_str(),
        otel.kind = "client",
        http.request.method = method.as_str(),
        server.address = host,
        server.port = port.map(i64::from),
        url.full = %url,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Records a response's status on `span`: 5xx marks server spans failed, 4xx and 5xx mark
/// client spans failed, as the HTTP semantic conventions say.
pub(crate) fn record_status(span: &Span, status: StatusCode, client: bool) {
    if span.is_disabled() {
        return;
    }
    // As i64: tracing-opentelemetry exports u64 fields as strings, semconv wants an int.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() || (client && status.is_client_error()) {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
}

/// Records an error instead of a response on `span`.
pub(crate) fn record_error(span: &Span, error: &dyn std::fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("error.type", tracing::field::display(error));
}

pub(crate) fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// An error answer in Spring Boot's JSON shape: `{"status": 400, "error": "Bad Request",
/// "message": "..."}` — what every msa endpoint answers past a bound or on bad input.
///
/// ```
/// use http::StatusCode;
///
/// let response = msa_core::http::error_response(StatusCode::BAD_REQUEST, "no such level");
/// assert_eq!(response.status(), StatusCode::BAD_REQUEST);
/// ```
pub fn error_response(status: StatusCode, message: impl fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = serde_json::json!({
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message.to_string(),
    });
    (status, axum::Json(body)).into_response()
}
