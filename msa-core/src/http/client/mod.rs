//! The client side: a span per outgoing request, context injection, and request metrics.

mod connect;
pub mod future;
mod layer;

pub use self::connect::{ConnectError, is_connect_failure};
pub use self::layer::ClientLayer;

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::Service;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use self::future::ResponseFuture;
use crate::telemetry::propagation;

/// Traces and measures every request sent through the inner service; see [`ClientLayer`].
#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S> ClientTrace<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ClientTrace { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let uri = req.uri();
        let authority = uri.authority().cloned();
        let span =
            crate::http::client_span(&method, uri.host().unwrap_or_default(), uri.port_u16(), uri);
        let cx = if span.is_disabled() {
            tracing::Span::current().context()
        } else {
            span.context()
        };
        propagation::inject(&cx, req.headers_mut());
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(inner, span, start, method, authority)
    }
}
