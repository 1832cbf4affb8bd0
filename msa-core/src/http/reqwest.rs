//! Tracing and metrics for reqwest, through reqwest-middleware.

use std::time::Instant;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::http::{ERROR_STATUS_LABEL, client_span, record_error, record_status, seconds};
use crate::metrics::HTTP_CLIENT_REQUESTS;
use crate::telemetry::propagation;

/// reqwest's counterpart of [`ClientLayer`](super::ClientLayer): a client span per request,
/// W3C context injection, and `http_client_requests_seconds`.
///
/// # Examples
///
/// ```
/// use msa_core::http::TraceMiddleware;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(TraceMiddleware::new())
///     .build();
/// # let _ = client;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceMiddleware {
    _priv: (),
}

impl TraceMiddleware {
    /// A tracing middleware.
    pub fn new() -> Self {
        TraceMiddleware { _priv: () }
    }
}

#[async_trait::async_trait]
impl Middleware for TraceMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let start = Instant::now();
        let uri = extensions
            .get::<crate::metrics::UriTemplate>()
            .map_or("none", |template| template.0);
        let method = req.method().clone();
        let url = req.url();
        let host = url.host_str().unwrap_or_default().to_owned();
        let span = client_span(&method, &host, url.port_or_known_default(), url);
        let cx = if span.is_disabled() {
            tracing::Span::current().context()
        } else {
            span.context()
        };
        propagation::inject(&cx, req.headers_mut());
        let result = next.run(req, extensions).instrument(span.clone()).await;
        let status = match &result {
            Ok(response) => {
                record_status(&span, response.status(), true);
                Some(response.status())
            }
            Err(error) => {
                record_error(&span, error);
                None
            }
        };
        let (status_label, exception) = match (&result, &status) {
            (_, Some(status)) => (status.as_str(), "none"),
            (Err(reqwest_middleware::Error::Reqwest(error)), None) => {
                (ERROR_STATUS_LABEL, crate::metrics::exception_name(error))
            }
            (Err(reqwest_middleware::Error::Middleware(error)), None) => (
                ERROR_STATUS_LABEL,
                crate::metrics::exception_name(error.as_ref()),
            ),
            (Ok(_), None) => (ERROR_STATUS_LABEL, "none"),
        };
        HTTP_CLIENT_REQUESTS
            .with_label_values(&[
                crate::metrics::method_label(&method),
                uri,
                status_label,
                crate::metrics::outcome(status),
                crate::metrics::client_name(&host),
                exception,
            ])
            .observe(seconds(start.elapsed()));
        result
    }
}
