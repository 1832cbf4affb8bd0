//! The general path: a request as an `http::Request`, its filters run over a header map.

use std::net::SocketAddr;

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Limited;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::forwarded::{Proto, forwarded, strip_hop_by_hop};
use super::path::{host, normalize, upstream_uri};
use super::websocket::{is_websocket, tunnel};
use super::{Arrived, MAX_FORWARDS, Matched};
use crate::error::error_response;
use crate::filter::Exchange;
use crate::filter::resilience::Guards;
use crate::gateway::Gateway;
use crate::h1::server::OverTls;
use crate::observe::{RequestTrace, request_span};
use crate::route::cors::{self, CorsConfig};
use crate::route::{Route, Target};

impl Gateway {
    pub(crate) async fn dispatch(
        &self,
        request: Request<Body>,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let host_header = host(&parts);
        let request = Arrived {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            host: host_header.as_deref(),
            remote,
        };
        let fields = parts.headers.iter();
        let fields = fields.map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let mut matched = match self.find(self.current_table(), request, fields) {
            Ok(matched) => matched,
            Err(answer) if answer.status() == StatusCode::NOT_FOUND => {
                let table = self.current_table();
                if !table.any_cors {
                    return *answer;
                }
                // A preflight for a path no route takes is answered by a global CORS
                // configuration that covers it (as Spring's globalcors does).
                let origin = cors::cross_origin(&parts.headers, host_header.as_deref());
                return match origin {
                    Some(origin) if cors::is_preflight(&parts.method, &parts.headers) => {
                        match normalize(parts.uri.path()).and_then(|p| table.cors.find(&p)) {
                            Some(config) => config.preflight(origin, &parts.headers),
                            None => *answer,
                        }
                    }
                    _ => *answer,
                };
            }
            Err(answer) => return *answer,
        };
        matched.host_header = host_header;
        self.serve(matched, parts, body, remote, forwards).await
    }

    /// Serves a request on the route it matched: in the gateway's span, counted in the
    /// route's metrics and logged.
    pub(crate) async fn serve(
        &self,
        matched: Matched,
        parts: http::request::Parts,
        body: Body,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        let Matched {
            table,
            slot,
            started,
            path,
            vars,
            host_header,
        } = matched;
        let route = &table.routes[slot];
        let method = parts.method.clone();
        let version = parts.version;
        // Copied only for the access log.
        let target = self.state.access_log.as_ref().map(|_| {
            parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string)
        });
        let span = request_span(&method, &route.id, &path);
        if !span.is_disabled()
            && (parts.headers.contains_key("traceparent") || parts.headers.contains_key("baggage"))
        {
            let _ = span.set_parent(msa_core::telemetry::propagation::extract(&parts.headers));
        }
        // Pinned where it is made and polled in the span by hand: `instrument` would move
        // it whole (twice), and awaiting it either way would keep room for it twice.
        let cors = match table.any_cors {
            true => route.cors.as_ref().or_else(|| table.cors.find(&path)),
            false => None,
        };
        let mut through = std::pin::pin!(self.through(
            route,
            cors,
            parts,
            body,
            path,
            vars,
            host_header,
            remote,
            forwards,
        ));
        let response = std::future::poll_fn(|cx| {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            through.as_mut().poll(cx)
        })
        .await;
        self.record(
            route,
            table.generation,
            &method,
            (target.as_deref().unwrap_or_default(), version),
            response.status(),
            started,
            remote,
            &RequestTrace::Span(span),
        );
        response
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn through(
        &self,
        route: &Route,
        cors: Option<&CorsConfig>,
        parts: http::request::Parts,
        body: Body,
        path: String,
        vars: Vec<(String, String)>,
        host_header: Option<String>,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        // Hop-by-hop fields go before the filters run: a client's `Connection: X-Name`
        // cannot remove a header a filter adds.
        let websocket = is_websocket(&parts.headers);
        let proto = Proto::of(parts.extensions.get::<OverTls>().is_some());
        // A cross-origin request its CORS configuration covers is judged first: a
        // preflight is answered here, a refused one gets 403.
        let origin = cors.and_then(|c| {
            Some((
                c,
                cors::cross_origin(&parts.headers, host_header.as_deref())?,
            ))
        });
        let cors_headers = match origin {
            None => None,
            Some((config, origin)) if cors::is_preflight(&parts.method, &parts.headers) => {
                return config.preflight(origin, &parts.headers);
            }
            Some((config, origin)) => match config.actual(origin, &parts.method) {
                Ok(headers) => Some(headers),
                Err(refused) => return *refused,
            },
        };
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        let mut ex = Exchange::new(path, parts.uri.query(), headers, vars, remote);
        if let Some(cors_headers) = cors_headers {
            ex.response_headers.extend(cors_headers);
            ex.cors = true;
        }
        if let Err(response) = crate::filter::run(&route.filters, &mut ex).await {
            return self.respond(route, &ex, host_header.as_deref(), *response);
        }
        let body = match ex.max_body {
            Some(max) => Body::new(Limited::new(body, max as usize)),
            None => body,
        };

        let uri = match &route.target {
            Target::Forward(path) => {
                if forwards >= MAX_FORWARDS {
                    return error_response(
                        StatusCode::LOOP_DETECTED,
                        "forward: went round too many times",
                    );
                }
                let mut request = Request::new(body);
                *request.method_mut() = parts.method;
                *request.uri_mut() = match &ex.query {
                    Some(query) => format!("{path}?{query}"),
                    None => path.clone(),
                }
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"));
                *request.headers_mut() = std::mem::take(&mut ex.headers);
                let response = Box::pin(self.dispatch(request, remote, forwards + 1)).await;
                return self.respond(route, &ex, host_header.as_deref(), response);
            }
            Target::Http { base, .. } => upstream_uri(
                base.scheme().cloned(),
                base.authority().cloned(),
                &ex.path,
                ex.query.as_deref(),
            ),
            Target::Lb(service) => service.parse().map_err(|_| ()).and_then(|authority| {
                upstream_uri(
                    Some(http::uri::Scheme::HTTP),
                    Some(authority),
                    &ex.path,
                    ex.query.as_deref(),
                )
            }),
        };
        let Ok(uri) = uri else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "the rewritten path is not a valid URI",
            );
        };

        let mut request = Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        let mut headers = std::mem::take(&mut ex.headers);
        // A WebSocket handshake keeps its Upgrade and Connection headers (written again
        // below); the two upgraded connections are then joined byte for byte.
        strip_hop_by_hop(&mut headers);
        if websocket {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        // Room for the four forwarding headers and a trace context at once, rather than
        // growing (rehashing every header) on the way.
        headers.reserve(6);
        forwarded(&mut headers, remote, host_header.as_deref(), proto);
        let current = tracing::Span::current();
        if !current.is_disabled() {
            msa_core::telemetry::propagation::inject(&current.context(), &mut headers);
        }
        if !ex.preserve_host {
            headers.remove(header::HOST);
        }
        *request.headers_mut() = headers;
        if websocket {
            let mut parts = parts.extensions;
            let Some(downstream) = parts.remove::<hyper::upgrade::OnUpgrade>() else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "this connection cannot be upgraded",
                );
            };
            let (response, _) =
                Box::pin(self.send_once(route, request, route.response_timeout)).await;
            return self.respond(
                route,
                &ex,
                host_header.as_deref(),
                tunnel(downstream, response),
            );
        }

        // Awaited here rather than in a helper `async fn`, which would be one more level of
        // future as large as the request's, moved whole on every request.
        let response = match Guards::of(&route.filters) {
            None => {
                self.send_once(route, request, route.response_timeout)
                    .await
                    .0
            }
            // Boxed: the common path's future stays small.
            Some(guards) => Box::pin(self.send_guarded(route, request, remote, guards)).await,
        };
        let response = match route.shapes_body {
            false => response,
            // Boxed: only routes with a shaping filter carry its state.
            true => Box::pin(crate::filter::shape(&route.filters, &ex, response)).await,
        };
        self.respond(route, &ex, host_header.as_deref(), response)
    }

    pub(crate) fn respond(
        &self,
        route: &Route,
        ex: &Exchange,
        host: Option<&str>,
        response: Response<Body>,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        if ex.cors {
            for name in &cors::RESPONSE_HEADERS {
                parts.headers.remove(name);
            }
        }
        for (name, value) in &ex.response_headers {
            if name == header::VARY {
                parts.headers.append(name, value.clone());
            } else {
                parts.headers.insert(name, value.clone());
            }
        }
        for filter in &route.filters {
            filter.response(ex, host, &mut parts);
        }
        Response::from_parts(parts, body)
    }
}
