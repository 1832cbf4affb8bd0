//! What the gateway counts per request: Spring Cloud Gateway's
//! `spring_cloud_gateway_requests_seconds{routeId, routeUri, outcome, status,
//! httpStatusCode, httpMethod}` for proxied requests, and msa's
//! `http_server_requests_seconds{method, uri, status, outcome, exception}` for every answer
//! the gateway gives (`uri` is the route's id, `NOT_FOUND` when no route matched, `UNKNOWN`
//! for a request refused before matching).
//!
//! A proxied request is counted in per-thread buffers of both histograms, found with one
//! hash lookup and flushed to the shared ones at most a second later by the next request,
//! and by every worker when a scrape asks: no atomic write per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use prometheus::HistogramVec;
use prometheus::local::LocalHistogram;

use crate::route::Route;

/// The histograms the gateway feeds.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// `spring_cloud_gateway_requests_seconds`.
    routes: HistogramVec,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::default();
}

/// This thread's buffers, by (table generation, route slot, method, status).
#[derive(Default)]
struct Local {
    /// foldhash: hashed on every request, with keys no caller chooses freely (the method
    /// is one of a bounded set, see `method_label`).
    children: HashMap<(u64, usize, &'static str, u16), Children, foldhash::fast::RandomState>,
    flushed: Option<Instant>,
}

/// One combination's buffers in both histograms.
struct Children {
    route: LocalHistogram,
    server: LocalHistogram,
}

impl Local {
    fn flush(&mut self) {
        for child in self.children.values_mut() {
            child.route.flush();
            child.server.flush();
        }
    }
}

/// The most combinations a thread buffers before it flushes and starts over.
const MAX_CHILDREN: usize = 4096;

impl Metrics {
    /// Registers the histograms (or finds them registered by an earlier gateway).
    pub(crate) fn new() -> Metrics {
        let opts = prometheus::HistogramOpts::new(
            "spring_cloud_gateway_requests_seconds",
            "Requests through the gateway's routes, with Spring Cloud Gateway's labels.",
        )
        .buckets(msa_core::metrics::DURATION_BUCKETS.to_vec());
        let labels = [
            "routeId",
            "routeUri",
            "outcome",
            "status",
            "httpStatusCode",
            "httpMethod",
        ];
        // Constant names and labels: cannot fail.
        let routes = HistogramVec::new(opts, &labels).expect("valid metric");
        Metrics {
            routes: msa_core::metrics::register_or_existing(routes),
        }
    }

    /// Counts a request that `route` served in `generation`'s table.
    pub(crate) fn observe_route(
        &self,
        route: &Route,
        generation: u64,
        method: &Method,
        status: StatusCode,
        now: Instant,
        seconds: f64,
    ) {
        let method = msa_core::metrics::method_label(method);
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            let local = &mut *local;
            let key = (generation, route.slot, method, status.as_u16());
            // One lookup on the usual path; the label lookups only for a new combination.
            if let Some(child) = local.children.get(&key) {
                child.route.observe(seconds);
                child.server.observe(seconds);
            } else {
                if local.children.len() >= MAX_CHILDREN {
                    local.flush();
                    local.children.clear();
                }
                let (outcome, name) = spring_status(status);
                let uri = crate::config::mask_url(&route.definition.uri);
                let child = Children {
                    route: self
                        .routes
                        .with_label_values(&[
                            route.id.as_str(),
                            &uri,
                            outcome,
                            &name,
                            status.as_str(),
                            method,
                        ])
                        .local(),
                    server: msa_core::metrics::http_server_requests()
                        .with_label_values(&[
                            method,
                            route.id.as_str(),
                            status.as_str(),
                            msa_core::metrics::outcome(Some(status)),
                            "none",
                        ])
                        .local(),
                };
                child.route.observe(seconds);
                child.server.observe(seconds);
                local.children.insert(key, child);
            }
            if local
                .flushed
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
            {
                local.flush();
                local.flushed = Some(now);
            }
        });
    }
}

/// Asks every worker to flush, for a scrape.
static FLUSH: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Workers that flushed since a scrape asked, and the wake-up of the scrape that waits.
static FLUSHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static ALL_FLUSHED: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Workers running [`flush_when_asked`].
static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Flushes this thread's buffers whenever a scrape asks, until the task is dropped: a
/// worker that goes quiet still has every request it served on the next scrape. (A timer
/// would cost every request a clock read when the worker parks.)
pub(crate) async fn flush_when_asked() {
    use std::sync::atomic::Ordering;
    struct Registered;
    impl Drop for Registered {
        fn drop(&mut self) {
            WORKERS.fetch_sub(1, Ordering::AcqRel);
        }
    }
    WORKERS.fetch_add(1, Ordering::AcqRel);
    let _registered = Registered;
    loop {
        FLUSH.notified().await;
        flush_thread();
        FLUSHED.fetch_add(1, Ordering::AcqRel);
        ALL_FLUSHED.notify_waiters();
    }
}

/// Has every worker flush its buffers, waiting up to 100 ms for them (called before a
/// scrape renders; the worker serving it flushes while this waits).
pub(crate) async fn flush_all() {
    use std::sync::atomic::Ordering;
    flush_thread();
    let workers = WORKERS.load(Ordering::Acquire);
    let start = FLUSHED.load(Ordering::Acquire);
    FLUSH.notify_waiters();
    let _ = tokio::time::timeout(Duration::from_millis(100), async {
        loop {
            let done = ALL_FLUSHED.notified();
            if FLUSHED.load(Ordering::Acquire).wrapping_sub(start) >= workers {
                return;
            }
            done.await;
        }
    })
    .await;
}

/// Flushes this thread's buffers to the shared histograms.
pub(crate) fn flush_thread() {
    // `try_with`: nothing to flush on a thread being torn down.
    let _ = LOCAL.try_with(|local| {
        if let Ok(mut local) = local.try_borrow_mut() {
            local.flush();
        }
    });
}

/// Counts an answer the gateway gave without a route: `NOT_FOUND` for a 404 (no route
/// matched), `UNKNOWN` for a request refused before matching (a bad path, oversized
/// headers).
pub(crate) fn observe_unrouted(method: &Method, status: StatusCode, started: Instant) {
    let route = if status == StatusCode::NOT_FOUND {
        "NOT_FOUND"
    } else {
        "UNKNOWN"
    };
    msa_core::metrics::http_server_requests()
        .with_label_values(&[
            msa_core::metrics::method_label(method),
            route,
            status.as_str(),
            msa_core::metrics::outcome(Some(status)),
            "none",
        ])
        .observe(started.elapsed().as_secs_f64());
}

/// Spring's `outcome` (the status's series) and `status` (`HttpStatus`'s name) for a
/// status code; a code Spring does not name is `CUSTOM` with the number as its status.
fn spring_status(status: StatusCode) -> (&'static str, std::borrow::Cow<'static, str>) {
    let Some(name) = spring_name(status.as_u16()) else {
        return ("CUSTOM", status.as_str().to_owned().into());
    };
    let outcome = match status.as_u16() / 100 {
        1 => "INFORMATIONAL",
        2 => "SUCCESSFUL",
        3 => "REDIRECTION",
        4 => "CLIENT_ERROR",
        _ => "SERVER_ERROR",
    };
    (outcome, name.into())
}

/// The name of Spring's `HttpStatus` constant for `code`.
fn spring_name(code: u16) -> Option<&'static str> {
    Some(match code {
        100 => "CONTINUE",
        101 => "SWITCHING_PROTOCOLS",
        102 => "PROCESSING",
        103 => "EARLY_HINTS",
        200 => "OK",
        201 => "CREATED",
        202 => "ACCEPTED",
        203 => "NON_AUTHORITATIVE_INFORMATION",
        204 => "NO_CONTENT",
        205 => "RESET_CONTENT",
        206 => "PARTIAL_CONTENT",
        207 => "MULTI_STATUS",
        208 => "ALREADY_REPORTED",
        226 => "IM_USED",
        300 => "MULTIPLE_CHOICES",
        301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        304 => "NOT_MODIFIED",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        402 => "PAYMENT_REQUIRED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        406 => "NOT_ACCEPTABLE",
        407 => "PROXY_AUTHENTICATION_REQUIRED",
        408 => "REQUEST_TIMEOUT",
        409 => "CONFLICT",
        410 => "GONE",
        411 => "LENGTH_REQUIRED",
        412 => "PRECONDITION_FAILED",
        413 => "PAYLOAD_TOO_LARGE",
        414 => "URI_TOO_LONG",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        416 => "REQUESTED_RANGE_NOT_SATISFIABLE",
        417 => "EXPECTATION_FAILED",
        418 => "I_AM_A_TEAPOT",
        422 => "UNPROCESSABLE_ENTITY",
        423 => "LOCKED",
        424 => "FAILED_DEPENDENCY",
        425 => "TOO_EARLY",
        426 => "UPGRADE_REQUIRED",
        428 => "PRECONDITION_REQUIRED",
        429 => "TOO_MANY_REQUESTS",
        431 => "REQUEST_HEADER_FIELDS_TOO_LARGE",
        451 => "UNAVAILABLE_FOR_LEGAL_REASONS",
        500 => "INTERNAL_SERVER_ERROR",
        501 => "NOT_IMPLEMENTED",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        505 => "HTTP_VERSION_NOT_SUPPORTED",
        506 => "VARIANT_ALSO_NEGOTIATES",
        507 => "INSUFFICIENT_STORAGE",
        508 => "LOOP_DETECTED",
        509 => "BANDWIDTH_LIMIT_EXCEEDED",
        510 => "NOT_EXTENDED",
        511 => "NETWORK_AUTHENTICATION_REQUIRED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_get_springs_names_and_series() {
        assert_eq!(spring_status(StatusCode::OK), ("SUCCESSFUL", "OK".into()));
        assert_eq!(
            spring_status(StatusCode::BAD_GATEWAY),
            ("SERVER_ERROR", "BAD_GATEWAY".into())
        );
        assert_eq!(
            spring_status(StatusCode::PERMANENT_REDIRECT),
            ("REDIRECTION", "PERMANENT_REDIRECT".into())
        );
        let odd = StatusCode::from_u16(299).unwrap();
        assert_eq!(spring_status(odd), ("CUSTOM", "299".into()));
    }
}
