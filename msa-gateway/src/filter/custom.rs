//! Filters written in Rust: a team's own gateway filters, named in the routes file like
//! Spring Cloud Gateway's, and global filters that every route runs.
//!
//! ```
//! use msa_gateway::filter::{Exchange, FilterFuture, Filters, GatewayFilter};
//!
//! /// Adds `X-Tenant` from the first path segment.
//! #[derive(Debug)]
//! struct Tenant {
//!     header: http::HeaderName,
//! }
//!
//! impl GatewayFilter for Tenant {
//!     fn request<'a>(&'a self, exchange: &'a mut Exchange) -> FilterFuture<'a> {
//!         Box::pin(async move {
//!             let tenant = exchange.path().split('/').nth(1).unwrap_or("").to_owned();
//!             if let Ok(value) = http::HeaderValue::from_str(&tenant) {
//!                 exchange.headers_mut().insert(self.header.clone(), value);
//!             }
//!             Ok(())
//!         })
//!     }
//! }
//!
//! // `- Tenant=X-Tenant` in a route's filters.
//! let filters = Filters::new().filter("Tenant", |args| {
//!     let header = args.required("header", 0)?;
//!     let header = http::HeaderName::try_from(header).map_err(|e| e.to_string())?;
//!     Ok(Tenant { header })
//! });
//! # let _ = filters;
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Response};

use super::Exchange;
use crate::config::Args;

/// What a filter's request step comes to: `Ok` to go on, `Err` with the answer to give
/// instead of calling the upstream.
pub type FilterFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Response<Body>>> + Send + 'a>>;

/// A gateway filter written in Rust. Its request step runs in the route's filter order on
/// the way in (and may answer in the upstream's place); its response step on the way out.
pub trait GatewayFilter: fmt::Debug + Send + Sync + 'static {
    /// On the way in: change the request, or answer now. By default, nothing.
    fn request<'a>(&'a self, exchange: &'a mut Exchange) -> FilterFuture<'a> {
        let _ = exchange;
        Box::pin(std::future::ready(Ok(())))
    }

    /// On the way out: change the upstream's (or an earlier filter's) answer. By default,
    /// nothing.
    fn response(&self, exchange: &Exchange, response: &mut http::response::Parts) {
        let _ = (exchange, response);
    }

    /// Whether this filter rewrites the upstream's answer bodies ([`shape`](Self::shape)):
    /// then the gateway reads each whole (up to [`MAX_SHAPED_BODY`]; a larger one is a 502,
    /// never passed on unshaped) before answering. By default, no.
    fn shapes_body(&self) -> bool {
        false
    }

    /// Rewrites an upstream's answer body, read whole (see [`shapes_body`](Self::shapes_body));
    /// `response`'s headers may change too (the gateway sets `Content-Length` after).
    /// By default, the body as it is.
    fn shape(
        &self,
        exchange: &Exchange,
        response: &mut http::response::Parts,
        body: Bytes,
    ) -> Bytes {
        let _ = (exchange, response);
        body
    }
}

/// The largest upstream answer body a shaping filter is given (1 MiB).
pub const MAX_SHAPED_BODY: usize = 1 << 20;

type Factory = dyn Fn(&Args) -> Result<Arc<dyn GatewayFilter>, String> + Send + Sync;

/// The filters a gateway knows besides Spring Cloud Gateway's: factories by name (what a
/// route's `filters` entry names, with its arguments) and global filters (run on every
/// route, before its default and own filters). Give it to
/// [`Gateway::with_filters`](crate::Gateway::with_filters) or
/// [`cli::main`](crate::cli::main).
#[derive(Clone, Default)]
pub struct Filters {
    factories: BTreeMap<String, Arc<Factory>>,
    global: Vec<Arc<dyn GatewayFilter>>,
}

impl fmt::Debug for Filters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filters")
            .field("factories", &self.factories.keys().collect::<Vec<_>>())
            .field("global", &self.global)
            .finish()
    }
}

impl Filters {
    /// No filters of a team's own.
    pub fn new() -> Self {
        Filters::default()
    }

    /// Filters named `name` in the routes file are built by `factory` from their
    /// arguments (positional in the shortcut form, named in the full form; see [`Args`]);
    /// its `Err` is reported as the configuration error of that filter, with file, line
    /// and key.
    ///
    /// # Panics
    ///
    /// When `name` is one of Spring Cloud Gateway's filters msa implements, or was given
    /// before: the routes file would not say which one it means.
    pub fn filter<F, G>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(&Args) -> Result<G, String> + Send + Sync + 'static,
        G: GatewayFilter,
    {
        assert!(
            !super::BUILT_IN.contains(&name),
            "{name} is one of msa-gateway's own filters"
        );
        let factory = move |args: &Args| -> Result<Arc<dyn GatewayFilter>, String> {
            Ok(Arc::new(factory(args)?))
        };
        let before = self.factories.insert(name.to_owned(), Arc::new(factory));
        assert!(before.is_none(), "the filter {name} is given twice");
        self
    }

    /// `filter` runs on every route, before its default and own filters (global filters
    /// in the order given).
    pub fn global(mut self, filter: impl GatewayFilter) -> Self {
        self.global.push(Arc::new(filter));
        self
    }

    /// The filter `name` built from `args`; `None` if no factory has that name.
    pub(crate) fn build(
        &self,
        name: &str,
        args: &Args,
    ) -> Option<Result<Arc<dyn GatewayFilter>, String>> {
        self.factories.get(name).map(|factory| factory(args))
    }

    /// The global filters.
    pub(crate) fn globals(&self) -> &[Arc<dyn GatewayFilter>] {
        &self.global
    }
}

impl Exchange {
    /// The path to send upstream (the request's, normalised, as earlier filters left it).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sends `path` upstream instead (it should start with `/`).
    pub fn set_path(&mut self, path: impl Into<String>) {
        self.path = path.into();
    }

    /// The query to send upstream, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Sends `query` upstream instead (`None`: no query).
    pub fn set_query(&mut self, query: Option<String>) {
        self.query = query;
    }

    /// The request's headers, as earlier filters left them (hop-by-hop ones already gone).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request's headers, to change what the upstream is sent.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// A variable the route's predicates captured (`{segment}` in a Path or Host pattern).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The client's address (the peer of the gateway's connection).
    pub fn remote(&self) -> std::net::SocketAddr {
        self.remote
    }

    /// Headers to add to the answer, whatever it is (set on the way in, applied on the
    /// way out).
    pub fn response_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.response_headers
    }
}
