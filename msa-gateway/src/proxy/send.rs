//! Sending upstream: once, or through the route's CircuitBreaker and Retry filters.

use std::net::SocketAddr;

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use msa_discovery::balance::LoadBalancer;
use tower::ServiceExt;

use super::CACHE_LIMIT;
use super::forwarded::strip_hop_by_hop;
use crate::error::{error_response, timed_out, upstream_error};
use crate::filter::Filter;
use crate::gateway::Gateway;
use crate::route::{Route, Target};

impl Gateway {
    /// Sends once: the gateway's own error answers (timeout, unreachable, no instance) come
    /// back with `true`.
    pub(crate) async fn send_once(
        &self,
        route: &Route,
        request: Request<Body>,
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
                Box::pin(tokio::time::timeout(route.response_timeout, sent)).await
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
                tokio::time::timeout(route.response_timeout, sent).await
            }
        };
        match sent {
            Err(_) => (timed_out(route.response_timeout), true),
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

    /// Sends through a CircuitBreaker and/or Retry filter.
    pub(crate) async fn send_guarded(
        &self,
        route: &Route,
        request: Request<Body>,
        remote: SocketAddr,
        guards: Guards<'_>,
    ) -> Response<Body> {
        let Guards {
            breaker,
            retry,
            cache,
        } = guards;
        let (parts, body) = request.into_parts();
        let template = || {
            let mut request = Request::new(());
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            request
        };
        // A body to send again: buffered when the route caches bodies, or empty.
        let retry = retry.filter(|r| r.applies_to(&parts.method) && r.retries > 0);
        let mut body = Some(body);
        let mut buffered: Option<bytes::Bytes> = None;
        if retry.is_some() {
            let empty = body
                .as_ref()
                .is_some_and(|b| http_body::Body::size_hint(b).exact() == Some(0));
            if empty {
                buffered = Some(bytes::Bytes::new());
            } else if cache && let Some(whole) = body.take() {
                match Limited::new(whole, CACHE_LIMIT).collect().await {
                    Ok(collected) => buffered = Some(collected.to_bytes()),
                    Err(_) => {
                        return error_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the request body is too large to cache for retries",
                        );
                    }
                }
            }
        }
        let mut attempt = 0;
        loop {
            let next_body = match (&buffered, body.take()) {
                (Some(bytes), _) => Body::from(bytes.clone()),
                (None, Some(body)) => body,
                (None, None) => Body::empty(),
            };
            let request = template().map(|()| next_body);
            let permit = match breaker {
                Some(b) => match b.breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(open) => {
                        return self
                            .fallback(b, &template(), remote, &open.to_string())
                            .await;
                    }
                },
                None => None,
            };
            let (response, failed) = self.send_once(route, request).await;
            let status = response.status();
            if let (Some(permit), Some(b)) = (permit, breaker) {
                let failure = failed || b.statuses.contains(&status);
                permit.complete(if failure {
                    msa_breaker::Outcome::Failure
                } else {
                    msa_breaker::Outcome::Success
                });
            }
            if let Some(r) = retry
                && buffered.is_some()
                && attempt < r.retries
                && r.retry_on(status, failed)
            {
                tokio::time::sleep(r.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            if let Some(b) = breaker
                && (failed || b.statuses.contains(&status))
                && b.fallback.is_some()
            {
                let reason = format!("the upstream answered {status}");
                return self.fallback(b, &template(), remote, &reason).await;
            }
            return response;
        }
    }

    /// The CircuitBreaker's fallback: `forward:` dispatched inside the gateway, or 503.
    pub(crate) async fn fallback(
        &self,
        breaker: &crate::filter::resilience::BreakerFilter,
        template: &Request<()>,
        remote: SocketAddr,
        reason: &str,
    ) -> Response<Body> {
        let Some(path) = &breaker.fallback else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, reason);
        };
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

/// A route's CircuitBreaker and Retry filters (the first of each), and whether it caches
/// request bodies for retries.
pub(crate) struct Guards<'a> {
    breaker: Option<&'a crate::filter::resilience::BreakerFilter>,
    retry: Option<&'a crate::filter::resilience::RetryFilter>,
    cache: bool,
}

/// The route's guards; `None` when it has neither a CircuitBreaker nor a Retry filter.
pub(crate) fn guards(route: &Route) -> Option<Guards<'_>> {
    let mut guards = Guards {
        breaker: None,
        retry: None,
        cache: false,
    };
    for filter in &route.filters {
        match filter {
            Filter::CircuitBreaker(b) if guards.breaker.is_none() => guards.breaker = Some(b),
            Filter::Retry(r) if guards.retry.is_none() => guards.retry = Some(r),
            Filter::CacheRequestBody => guards.cache = true,
            _ => {}
        }
    }
    (guards.breaker.is_some() || guards.retry.is_some()).then_some(guards)
}
