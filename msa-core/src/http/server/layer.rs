use tower::Layer;

use super::ServerTrace;

/// A [`Layer`] that traces and measures every request a server handles.
///
/// For each request it:
///
/// - continues the caller's trace from `traceparent`/`tracestate`/`baggage`, or starts a
///   new one when they are missing or malformed;
/// - opens a `server` span named `{method} {route}` (for example `GET /orders/{id}`), with
///   the `http.request.method`, `http.route`, `url.path` and `http.response.status_code`
///   attributes, marked failed on 5xx; every log line written while handling the request
///   carries its trace and span id;
/// - records the time to the response head in `http_server_requests_seconds` with the
///   labels `method`, `route` (the route template, never the raw path) and `status`.
///
/// The route is axum's [`MatchedPath`](axum::extract::MatchedPath): add the layer with
/// [`Router::layer`](axum::Router::layer), which runs it after routing. Requests that matched
/// no route are labelled `NOT_FOUND` (for a 404) or `UNKNOWN`, as Spring does, so raw paths
/// never become label values.
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::get};
/// use msa_core::http::ServerLayer;
///
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(|| async { "an order" }))
///     .layer(ServerLayer::new());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer {
    _priv: (),
}

impl ServerLayer {
    /// A server layer.
    pub fn new() -> Self {
        ServerLayer { _priv: () }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace::new(inner)
    }
}
