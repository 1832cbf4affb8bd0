//! The gateway's own answers: Spring's JSON error body, and what each failure maps to.

use axum::body::Body;
use http::{Response, StatusCode};
use msa_discovery::balance::NoInstance;

/// What a filter decided: go on, or answer now.
pub(crate) type Outcome = Result<(), Box<Response<Body>>>;

/// A JSON error answer, in Spring's shape.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    msa_core::http::error_response(status, message)
}

pub(crate) fn upstream_error(error: &(dyn std::error::Error + 'static)) -> Response<Body> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(none) = e.downcast_ref::<NoInstance>() {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &none.to_string());
        }
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the route allows",
            );
        }
        source = e.source();
    }
    let connect = msa_core::http::client::is_connect_failure(error);
    if connect {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the upstream is unreachable: {error}"),
        )
    } else {
        error_response(
            StatusCode::BAD_GATEWAY,
            &format!("the upstream failed: {error}"),
        )
    }
}

/// 400 for a path whose `..` segments climb above the root.
pub(crate) fn climbs_above_root() -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, "the path climbs above the root")
}

/// 404 when no route matches.
pub(crate) fn no_route(method: &http::Method, path: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no route matches {method} {path}"),
    )
}

/// The answer when the upstream took longer than the route's response timeout.
pub(crate) fn timed_out(timeout: std::time::Duration) -> Response<Body> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        &format!("the upstream did not answer within {timeout:?}"),
    )
}

/// RequestRateLimiter's refusal.
pub(crate) fn too_many_requests() -> Box<Response<Body>> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    Box::new(response)
}
