//! The raw path: a request for a route that only needs its target is forwarded with its
//! header lines as they came (less the hop-by-hop ones), and the upstream's answer comes
//! back the same way; no header map is built either way.

use std::net::SocketAddr;
use std::task::Poll;
use std::time::Instant;

use axum::body::Body;
use http::header::HeaderMap;
use http::{Response, StatusCode};

use super::forwarded::{Proto, forwarded_element, forwarded_for, write_ip};
use super::{Arrived, Matched};
use crate::error::{error_response, timed_out, upstream_error};
use crate::filter::Exchange;
use crate::gateway::Gateway;
use crate::h1::client::Outgoing;
use crate::h1::server::{RawRequest, Reply};
use crate::h1::wire::{HopByHop, Name, push_field};
use crate::observe::{RequestTrace, unrouted};
use crate::route::Route;

impl Gateway {
    pub(crate) async fn dispatch_raw(&self, raw: RawRequest, remote: SocketAddr) -> Reply {
        let table = self.current_table();
        let target = raw.target();
        let (path, query) = match target.bytes().position(|b| b == b'?') {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };
        let grpc = || {
            raw.head()
                .get(Name::ContentType)
                .is_some_and(|v| v.starts_with(b"application/grpc"))
        };
        // A browser's cross-origin request is judged by the CORS configuration, which
        // reads its headers.
        let cors = || table.any_cors && raw.head().has(Name::Origin);
        if !table.raw
            || !path.starts_with('/')
            || !plain_target(target.as_bytes())
            || grpc()
            || cors()
        {
            return self.dispatch_parsed(raw, remote).await;
        }
        // As `HeaderValue::to_str` reads it: visible ASCII only.
        let host_header = raw
            .head()
            .get(Name::Host)
            .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
            .and_then(|v| std::str::from_utf8(v).ok());
        // The raw path's routes match on no header (`table.raw`).
        let no_headers = HeaderMap::new();
        let request = Arrived {
            method: &raw.method,
            path,
            query,
            headers: &no_headers,
            host: host_header,
            remote,
        };
        let fields = raw.head().fields().map(|(_, n, v)| (n, v));
        let mut matched = match self.find(table, request, fields) {
            Ok(matched) => matched,
            Err(answer) => return Reply::Http(*answer),
        };
        if !matched.table.routes[matched.slot].raw {
            // Served the general way, with the header map its filters need.
            matched.host_header = host_header.map(str::to_owned);
            let started = matched.started;
            let method = raw.method.clone();
            return match raw.into_request() {
                Ok(request) => {
                    let (parts, body) = request.into_parts();
                    // Boxed: the raw path's future stays small.
                    Reply::Http(Box::pin(self.serve(matched, parts, body, remote, 0)).await)
                }
                Err(reason) => {
                    let refused = error_response(StatusCode::BAD_REQUEST, reason);
                    Reply::Http(unrouted(&method, refused, started))
                }
            };
        }
        let Matched {
            table,
            slot,
            path,
            vars,
            started,
            ..
        } = matched;
        let route = &table.routes[slot];
        let method = raw.method.clone();
        let trace = RequestTrace::begin(&method, &route.id, &path, raw.head());
        let request = upstream_request(
            route,
            &raw,
            (path, query, vars),
            host_header,
            remote,
            &trace,
        );
        // Sent here rather than in an `async fn` of its own: the request's future is moved
        // whole on every request, and each level adds to it.
        let reply = match request {
            Err(answer) => Reply::Http(*answer),
            Ok(request) => {
                // Pinned where they are made, and polled by hand: wrapping them
                // (`timeout`) would move them whole, twice. Not in the span: nothing in
                // sending logs for the request (the trace context is in its head already).
                let mut send = std::pin::pin!(crate::client::pool::send_raw(
                    route.authority(),
                    request,
                    route.connect_timeout,
                    &self.state.tls,
                    self.state.max_connections_per_thread,
                ));
                let mut deadline = std::pin::pin!(tokio::time::sleep(route.response_timeout));
                let sent = std::future::poll_fn(|cx| {
                    if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                        return Poll::Ready(Some(sent));
                    }
                    deadline.as_mut().poll(cx).map(|()| None)
                })
                .await;
                match sent {
                    None => Reply::Http(timed_out(route.response_timeout)),
                    Some(Err(error)) => Reply::Http(upstream_error(&*error)),
                    Some(Ok((head, body))) => Reply::Raw(head, body),
                }
            }
        };
        let status = match &reply {
            Reply::Http(response) => response.status(),
            Reply::Raw(head, _) => head.status,
        };
        let version = match raw.http10 {
            true => http::Version::HTTP_10,
            false => http::Version::HTTP_11,
        };
        self.record(
            route,
            table.generation,
            &method,
            (raw.target(), version),
            status,
            started,
            remote,
            &trace,
        );
        reply
    }

    /// Serves a request from the gateway's own loop the general way, as an
    /// `http::Request`.
    async fn dispatch_parsed(&self, raw: RawRequest, remote: SocketAddr) -> Reply {
        let started = Instant::now();
        let method = raw.method.clone();
        match raw.into_request() {
            // Boxed: the raw path's future stays small.
            Ok(request) => Reply::Http(Box::pin(self.dispatch(request, remote, 0)).await),
            Err(reason) => {
                let refused = error_response(StatusCode::BAD_REQUEST, reason);
                Reply::Http(unrouted(&method, refused, started))
            }
        }
    }
}

/// The request for a raw route's upstream, written out from the one that arrived: its
/// target rewritten by the route's filters, its header lines as they came less the
/// hop-by-hop ones, and Host, X-Forwarded-*, Forwarded and the trace context written by
/// the gateway. `Err` is the answer instead (a filter's, or a 400).
///
/// Not part of the `async fn` that sends it: what it needs would be kept in that
/// future's state, which is moved whole on every request.
fn upstream_request(
    route: &Route,
    raw: &RawRequest,
    (path, query, vars): (String, Option<&str>, Vec<(String, String)>),
    host: Option<&str>,
    remote: SocketAddr,
    trace: &RequestTrace,
) -> Result<Outgoing, Box<Response<Body>>> {
    let mut ex = Exchange::new(path, query, HeaderMap::new(), vars, remote);
    for filter in &route.filters {
        filter.request(&mut ex)?;
    }
    let authority = route.authority();
    if authority.is_empty() {
        let response = error_response(StatusCode::BAD_GATEWAY, "the upstream URI has no host");
        return Err(Box::new(response));
    }
    let head = raw.head();
    // Room for what the gateway writes itself (Host, X-Forwarded-*, Forwarded).
    let mut out = Vec::with_capacity(raw.head_len() + 2 * authority.len() + 320);
    out.extend_from_slice(raw.method.as_str().as_bytes());
    out.push(b' ');
    let target_at = out.len();
    out.extend_from_slice(ex.path.as_bytes());
    if let Some(query) = &ex.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    if !plain_target(&out[target_at..]) {
        // What a filter wrote: sent as `http` reads it, if it does.
        match http::uri::PathAndQuery::try_from(&out[target_at..]) {
            Ok(target) => {
                out.truncate(target_at);
                out.extend_from_slice(target.as_str().as_bytes());
            }
            Err(_) => {
                return Err(Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    "the rewritten path is not a valid URI",
                )));
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(&mut out, b"host", authority.as_bytes());
    let hop = HopByHop::of(head);
    let trace_fields = trace.fields(head);
    let mut had_length = false;
    for (known, name, value) in head.fields() {
        match known {
            Name::ContentLength => had_length = true,
            // Written by the gateway below.
            Name::Host
            | Name::XForwardedFor
            | Name::XForwardedProto
            | Name::XForwardedHost
            | Name::Forwarded => {}
            _ if hop.contains(known, name) => {}
            _ if trace_fields.replaces(known, name) => {}
            _ => push_field(&mut out, name, value),
        }
    }
    let ip = remote.ip().to_canonical();
    let mut ip_text = [0u8; 48];
    let ip_text = write_ip(ip, &mut ip_text);
    out.extend_from_slice(b"x-forwarded-for: ");
    forwarded_for(&mut out, head.values(Name::XForwardedFor), ip_text);
    let proto = Proto::of(raw.tls);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(proto.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(host) = host {
        push_field(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    out.extend_from_slice(b"forwarded: ");
    forwarded_element(
        &mut out,
        head.values(Name::Forwarded),
        (ip, ip_text),
        proto,
        host,
    );
    out.extend_from_slice(b"\r\n");
    trace_fields.write(|name, value| push_field(&mut out, name, value));
    let body = raw.body();
    if !body.is_empty() || had_length || crate::h1::client::expects_body(&raw.method) {
        out.extend_from_slice(b"content-length: ");
        crate::h1::wire::push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Outgoing {
        head: out,
        body,
        head_only: raw.method == http::Method::HEAD,
    })
}

/// Whether a request target can be passed on as it is: visible ASCII that `http` takes
/// in a path and query as well (no fragment, nothing it would refuse), and not too long.
pub(crate) fn plain_target(target: &[u8]) -> bool {
    target.len() < usize::from(u16::MAX) - 1
        && target
            .iter()
            .all(|b| (0x21..0x7f).contains(b) && !matches!(b, b'#' | b'<' | b'>' | b'`' | b'"'))
}
