use tower::Layer;

use super::ClientTrace;

/// A [`Layer`] that traces and measures every request a client sends.
///
/// For each request it opens a `client` span (a child of the current span), writes its
/// context into the request as W3C `traceparent`/`tracestate`/`baggage` headers, marks the
/// span failed on 4xx, 5xx or a transport error, and records the time to the response head
/// in `http_client_requests_seconds` with the labels `method`, `host` (the URI's host: for
/// `http://orders/...` that is the logical name `orders`) and `status`.
///
/// # Examples
///
/// Around hyper-util's pooled client:
///
/// ```
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use msa_core::http::ClientLayer;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
/// let traced = ServiceBuilder::new().layer(ClientLayer::new()).service(client);
/// # let _ = traced;
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    _priv: (),
}

impl ClientLayer {
    /// A client layer.
    pub fn new() -> Self {
        ClientLayer { _priv: () }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace::new(inner)
    }
}
