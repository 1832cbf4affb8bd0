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

/// `http_server_requests_seconds{method, uri, status, outcome, exception}`: duration of
/// handled requests, with Micrometer's labels.
pub(crate) static HTTP_SERVER_REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "http_server_requests_seconds",
        "Duration of HTTP requests handled by this service, by method, route template, status, outcome and exception.",
        &["method", "uri", "status", "outcome", "exception"],
    )
});

/// `http_client_requests_seconds{method, uri, status, outcome, client_name, exception}`:
/// duration of outgoing requests, with Micrometer's labels.
pub(crate) static HTTP_CLIENT_REQUESTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "http_client_requests_seconds",
        "Duration of HTTP requests sent by this service, by method, URI template, status, outcome, target and exception.",
        &[
            "method",
            "uri",
            "status",
            "outcome",
            "client_name",
            "exception",
        ],
    )
});

/// `http_server_requests_seconds{method, uri, status, outcome, exception}`, for a server
/// that serves requests outside [`ServerLayer`](crate::http::ServerLayer) (msa-gateway's
/// own HTTP/1.1 loop) and must still count them where every msa server does. Label its
/// `method` with [`method_label`] and its `outcome` with [`outcome`].
pub fn http_server_requests() -> &'static HistogramVec {
    &HTTP_SERVER_REQUESTS
}

/// Micrometer's `outcome` label for a status: `INFORMATIONAL`, `SUCCESS`, `REDIRECTION`,
/// `CLIENT_ERROR`, `SERVER_ERROR`, or `UNKNOWN` (no status, or one outside 100–599).
///
/// ```
/// use http::StatusCode;
/// use msa_core::metrics::outcome;
///
/// assert_eq!(outcome(Some(StatusCode::CREATED)), "SUCCESS");
/// assert_eq!(outcome(Some(StatusCode::SERVICE_UNAVAILABLE)), "SERVER_ERROR");
/// assert_eq!(outcome(None), "UNKNOWN");
/// ```
pub fn outcome(status: Option<http::StatusCode>) -> &'static str {
    match status.map(|s| s.as_u16() / 100) {
        Some(1) => "INFORMATIONAL",
        Some(2) => "SUCCESS",
        Some(3) => "REDIRECTION",
        Some(4) => "CLIENT_ERROR",
        Some(5) => "SERVER_ERROR",
        _ => "UNKNOWN",
    }
}

/// The most distinct `client_name` values [`client_name`] hands out; hosts past it are
/// `other`, so a service that calls hosts it was handed from outside cannot grow its
/// series without bound.
pub const MAX_CLIENT_NAMES: usize = 256;

/// `host` as a `client_name` label: itself while fewer than [`MAX_CLIENT_NAMES`] hosts
/// have been seen (or it is one of them), else `other`.
///
/// ```
/// assert_eq!(msa_core::metrics::client_name("payments"), "payments");
/// ```
pub fn client_name(host: &str) -> &str {
    static SEEN: std::sync::RwLock<Option<std::collections::HashSet<Box<str>>>> =
        std::sync::RwLock::new(None);
    {
        let seen = crate::sync::read(&SEEN);
        if seen.as_ref().is_some_and(|seen| seen.contains(host)) {
            return host;
        }
    }
    let mut seen = crate::sync::write(&SEEN);
    let seen = seen.get_or_insert_with(Default::default);
    if seen.contains(host) {
        return host;
    }
    if seen.len() >= MAX_CLIENT_NAMES {
        return "other";
    }
    seen.insert(host.into());
    host
}

/// The `uri` label of an outgoing request: the template set with [`UriTemplate`] (put it
/// in the request's extensions), else `none`, as Spring Boot does when it has no template
/// — paths are not labels, so ids in them cannot grow the series without bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriTemplate(pub &'static str);

/// Names errors for the `exception` label (Micrometer puts the exception's class there):
/// a crate whose errors reach msa's metrics registers its types once, by name.
type Namer = fn(&(dyn std::error::Error + 'static)) -> Option<&'static str>;

static NAMERS: std::sync::RwLock<Vec<Namer>> = std::sync::RwLock::new(Vec::new());

/// Adds a way to name errors in the `exception` label: `namer` returns a name for the
/// errors it knows (typically by downcasting to its own types), `None` for others. The
/// names msa's crates give are Resilience4j's and Java's where they have one
/// (`CallNotPermittedException`, `TimeoutException`, `ConnectException`), so Spring
/// dashboards group them alike.
pub fn name_errors(namer: Namer) {
    let mut namers = crate::sync::write(&NAMERS);
    if !namers
        .iter()
        .any(|known| std::ptr::fn_addr_eq(*known, namer))
    {
        namers.push(namer);
    }
}

/// The `exception` label of an error: the first name a registered namer gives for it or
/// for one of its sources, else what reqwest says of it (`TimeoutException`,
/// `ConnectException`), else `IOException`.
pub fn exception_name(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let namers = crate::sync::read(&NAMERS);
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(name) = namers.iter().find_map(|namer| namer(error)) {
            return name;
        }
        if let Some(error) = error.downcast_ref::<reqwest::Error>() {
            if error.is_timeout() {
                return "TimeoutException";
            }
            if error.is_connect() {
                return "ConnectException";
            }
        }
        next = error.source();
    }
    "IOException"
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

/// The `application` label every rendered series carries (Spring Boot's
/// `management.metrics.tags.application`).
static APPLICATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Labels every series [`render`] returns with `application="<name>"` (the first name set
/// in the process stays: one process is one application). [`Telemetry`](crate::telemetry::Telemetry)
/// sets it to the service's name.
pub fn set_application(name: impl Into<String>) {
    let _ = APPLICATION.set(name.into());
}

/// Renders every metric in [`registry()`] in the Prometheus text exposition format 0.0.4,
/// each series labelled with the [application](set_application) (unless it has an
/// `application` label of its own).
pub fn render() -> String {
    use prometheus::Encoder as _;
    let mut families = registry().gather();
    if let Some(application) = APPLICATION.get() {
        for family in &mut families {
            for metric in family.mut_metric() {
                let labels = metric.get_label();
                if labels.iter().any(|l| l.name() == "application") {
                    continue;
                }
                let mut pair = prometheus::proto::LabelPair::default();
                pair.set_name("application".to_owned());
                pair.set_value(application.clone());
                // Label pairs are kept sorted by name, as the encoder expects.
                let mut labels = labels.to_vec();
                let at = labels.partition_point(|l| l.name() < "application");
                labels.insert(at, pair);
                metric.set_label(labels);
            }
        }
    }
    let mut out = Vec::with_capacity(8 * 1024);
    // The text encoder only fails on a failing writer; a Vec never fails.
    let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_past_the_bound_are_other() {
        let names: Vec<String> = (0..MAX_CLIENT_NAMES + 10)
            .map(|i| format!("host-{i}.bound.test"))
            .collect();
        let labels: Vec<&str> = names.iter().map(|n| client_name(n)).collect();
        assert_eq!(labels[0], "host-0.bound.test");
        assert_eq!(labels[MAX_CLIENT_NAMES + 9], "other");
        assert_eq!(client_name("host-0.bound.test"), "host-0.bound.test");
    }
}
