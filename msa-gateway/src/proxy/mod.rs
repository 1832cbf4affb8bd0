//! The proxy: find the request's route, apply its filters, send it upstream on a pooled
//! connection and stream the answer back.
//!
//! Requests from the gateway's own HTTP/1.1 loop whose route only needs its target take
//! the [`raw`] path (header lines passed on as they came); everything else is served as an
//! `http::Request` by [`parsed`]. Both share the matching below; [`send`] sends upstream
//! (with the route's breaker and retries), [`forwarded`] writes what the upstream is told
//! of the client, [`path`] normalises paths and [`websocket`] joins upgraded connections.

pub(crate) mod forwarded;
pub(crate) mod parsed;
pub(crate) mod path;
pub(crate) mod raw;
pub(crate) mod send;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use http::{HeaderMap, Method, Response, StatusCode};

use self::path::{firewall, normalize, strip_port};
use crate::error::{climbs_above_root, error_response, no_route};
use crate::filter::oversized_field;
use crate::gateway::{Gateway, ThreadTable};
use crate::observe::{RequestTrace, unrouted};
use crate::route::Route;
use crate::route::predicate::RequestInfo;

/// A request matched to its route: what serving it takes from the matching.
pub(crate) struct Matched {
    pub(crate) table: Arc<ThreadTable>,
    /// The route's place in the table.
    pub(crate) slot: usize,
    pub(crate) started: Instant,
    /// The normalized path.
    pub(crate) path: String,
    /// Variables the predicates captured.
    pub(crate) vars: Vec<(String, String)>,
    /// The Host header as the client sent it (set by the path that serves the request,
    /// when it needs it).
    pub(crate) host_header: Option<String>,
}

/// How many times `forward:` may dispatch again within one request.
pub(crate) const MAX_FORWARDS: u8 = 4;

/// What the matching reads of a request, on either path.
pub(crate) struct Arrived<'a> {
    pub(crate) method: &'a Method,
    /// The path as it arrived (normalised by the matching).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    /// The Host header as the client sent it.
    pub(crate) host: Option<&'a str>,
    pub(crate) remote: SocketAddr,
}

impl Gateway {
    /// The route `request` takes in `table`; or the answer when it takes none (a path the
    /// gateway refuses, a header past `server.max-header-size`, no route matches), counted
    /// as unrouted. `fields` are the request's header fields as they arrived.
    pub(crate) fn find<'a>(
        &self,
        table: Arc<ThreadTable>,
        request: Arrived<'_>,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Matched, Box<Response<Body>>> {
        let started = Instant::now();
        let method = request.method;
        if let Some(refused) = firewall(request.path) {
            return Err(Box::new(unrouted(method, refused, started)));
        }
        let Some(path) = normalize(request.path) else {
            return Err(Box::new(unrouted(method, climbs_above_root(), started)));
        };
        if let Some(refused) = self.oversized(fields) {
            return Err(Box::new(unrouted(method, refused, started)));
        }
        let host_only = request.host.map(strip_port);
        let mut vars = Vec::new();
        let route = {
            let mut info = RequestInfo {
                method,
                path: &path,
                query: request.query,
                headers: request.headers,
                host: host_only.as_deref(),
                remote: request.remote,
                draws: Vec::new(),
            };
            table.find(&mut info, &mut vars).map(|route| route.slot)
        };
        let Some(slot) = route else {
            return Err(Box::new(unrouted(method, no_route(method, &path), started)));
        };
        Ok(Matched {
            table,
            slot,
            started,
            path,
            vars,
            host_header: None,
        })
    }

    /// 431 when a header field, or all of them, is larger than `server.max-header-size`.
    pub(crate) fn oversized<'a>(
        &self,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<Response<Body>> {
        let max = self.state.max_header_size;
        let (name, size) = oversized_field(fields, max)?;
        Some(error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("request header {name} is {size} bytes; the limit is {max}"),
        ))
    }
}

impl Gateway {
    /// Counts a request in its route's metrics and adds its access log line (when the
    /// log is on; `target` is the request target as the client sent it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        route: &Route,
        generation: u64,
        method: &http::Method,
        (target, version): (&str, http::Version),
        status: StatusCode,
        started: Instant,
        remote: SocketAddr,
        trace: &RequestTrace,
    ) {
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        self.state.metrics.observe_route(
            route,
            generation,
            method,
            status,
            now,
            elapsed.as_secs_f64(),
        );
        trace.answered(status);
        if let Some(log) = &self.state.access_log {
            let trace = trace.trace_id();
            log.log(
                remote.ip(),
                (method, target, version),
                status.as_u16(),
                elapsed,
                &route.id,
                trace.as_deref(),
            );
        }
    }
}
