//! Sending upstream: once, or through the route's CircuitBreaker and Retry filters.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use msa_discovery::balance::LoadBalancer;
use tower::ServiceExt;

use super::forwarded::strip_hop_by_hop;
use crate::error::{error_response, timed_out, upstream_error};
use crate::filter::resilience::{Guarded, Guards};
use crate::gateway::Gateway;
use crate::route::{Route, Target};

impl Gateway {
    /// Sends once, within `timeout`: the gateway's own error answers (timeout, unreachable,
    /// no instance) come back with `true`.
    pub(crate) async fn send_once(
        &self,
        route: &Route,
        request: Request<Body>,
        timeout: Duration,
    ) -> (Response<Body>, bool) {
        let h2c = matches!(route.target, Target::Http { h2c: true, .. });
        let sent = match &route.target {
            Target::Lb(_) => {
                let client = crate::client::pool::PoolClient {
                    connect_timeout: route.connect_timeout,
                    h2c,
                    tls: self.state.tls.clone(),
                    max_connections: self.state.max_connections_per_thread,
                };
                let Some(balancer) = &self.state.balancer else {
                    return (
                        error_response(StatusCode::SERVICE_UNAVAILABLE, "no discovery configured"),
                        true,
                    );
                };
                let balanced = LoadBalancer::new(client, balancer.clone());
                let sent = balanced.oneshot(request);
                Box::pin(tokio::time::timeout(timeout, sent)).await
            }
            _ => {
                // The TLS settings are lent, not cloned: an `Arc` count both workers wrote
                // on every request would bounce its cache line between cores.
                let sent = crate::client::pool::send(
                    request,
                    route.connect_timeout,
                    h2c,
                    &self.state.tls,
                    self.state.max_connections_per_thread,
                );
                tokio::time::timeout(timeout, sent).await
            }
        };
        match sent {
            Err(_) => (timed_out(timeout), true),
            Ok(Err(error)) => (upstream_error(&*error), true),
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(&mut parts.headers);
                }
                (Response::from_parts(parts, body), false)
            }
        }
    }

    /// Sends through the route's CircuitBreaker and/or Retry filters; a breaker's fallback
    /// is dispatched inside the gateway.
    pub(crate) async fn send_guarded(
        &self,
        route: &Route,
        request: Request<Body>,
        remote: SocketAddr,
        guards: Guards<'_>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let template = Request::from_parts(parts, ());
        let send = |request, timeout: Option<Duration>| {
            self.send_once(route, request, timeout.unwrap_or(route.response_timeout))
        };
        match guards.call(&template, body, send).await {
            Guarded::Answer(response) => response,
            Guarded::Fallback(path, reason) => {
                self.fallback(path, &template, remote, &reason).await
            }
        }
    }

    /// A CircuitBreaker's fallback, `forward:` dispatched inside the gateway with the
    /// request's method and headers and the reason in `X-Msa-Fallback-Reason`.
    pub(crate) async fn fallback(
        &self,
        path: &str,
        template: &Request<()>,
        remote: SocketAddr,
        reason: &str,
    ) -> Response<Body> {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        *request.headers_mut() = template.headers().clone();
        request.headers_mut().remove(header::CONTENT_LENGTH);
        if let Ok(value) = HeaderValue::from_str(reason) {
            request.headers_mut().insert("x-msa-fallback-reason", value);
        }
        Box::pin(self.dispatch(request, remote, 1)).await
    }
}
