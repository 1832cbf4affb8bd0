//! The process-wide Prometheus registry and the HTTP metrics msa's layers feed.
//!
//! msa registers its metrics in [`prometheus::default_registry`], so metrics a service
//! registers with the `prometheus` crate's macros appear on `/actuator/prometheus` beside
//! msa's own. On Linux the registry also carries the standard `process_*` metrics (CPU,
//! resident memory, open file descriptors, start time).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, Registry};

/// Histogram buckets for request durations in seconds: 1 ms to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry `/actuator/prometheus` exposes.
pub fn registry() -> &'static Registry {
    prometheus::default_registry()
}

/// Registers `collector` in [`registry()`], or returns the collector already registered
/// under the same descriptors, so that building a layer twice never fails.
pub fn register_or_existing<C>(collector: C) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    match registry().register(Box::new(collector.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => collector,
        Err(error) => {
            tracing::warn!(%error, "metric not registered");
            collector
        }
    }
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    // Names and labels are constants of this module, so this cannot fail.
    let histogram = HistogramVec::new(opts, labels).expect("valid histogram options");
    register_or_existing(histogram)
}

/// `http_server_requests_seconds{method, route, status}`: duration of handled requests.
pub(crate) static HTTP_SERVER_REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "http_server_requests_seconds",
        "Duration of HTTP requests handled by this service, by method, route template and status.",
        &["method", "route", "status"],
    )
});

/// `http_client_requests_seconds{method, host, status}`: duration of outgoing requests.
pub(crate) static HTTP_CLIENT_REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "http_client_requests_seconds",
        "Duration of HTTP requests sent by this service, by method, target host and status.",
        &["method", "host", "status"],
    )
});

/// `http_server_requests_seconds{method, route, status}`, for a server that serves requests
/// outside [`ServerLayer`](crate::http::ServerLayer) (msa-gateway's own HTTP/1.1 loop) and
/// must still count them where every msa server does. Label its `method` with
/// [`method_label`].
pub fn http_server_requests() -> &'static HistogramVec {
    &HTTP_SERVER_REQUESTS
}

/// A request method as a metric label: the methods of RFC 9110 and PATCH as themselves,
/// any other as `OTHER`, so a client cannot add label values (and memory) at will.
///
/// ```
/// use http::Method;
/// use msa_core::metrics::method_label;
///
/// assert_eq!(method_label(&Method::PATCH), "PATCH");
/// assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
/// ```
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Renders every metric in [`registry()`] in the Prometheus text exposition format 0.0.4.
pub fn render() -> String {
    use prometheus::Encoder as _;
    let families = registry().gather();
    let mut out = Vec::with_capacity(8 * 1024);
    // The text encoder only fails on a failing writer; a Vec never fails.
    let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}
