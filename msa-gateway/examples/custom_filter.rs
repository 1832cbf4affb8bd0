//! A gateway binary of one's own: msa-gateway with filters written in Rust, named in the
//! routes file beside Spring Cloud Gateway's.
//!
//! - `Tenant=HEADER, TENANT...`: the first path segment is the tenant; one not on the
//!   route's list is refused with 403 before any upstream is called, the others go on with
//!   the tenant in `HEADER`.
//! - a global filter, run on every route: each answer says which gateway served it
//!   (`X-Served-By`).
//!
//! ```text
//! cargo run -p msa-gateway --example custom_filter -- --config gateway.yaml
//! ```
//!
//! with, in `gateway.yaml`:
//!
//! ```yaml
//! routes:
//!   - id: orders
//!     uri: http://127.0.0.1:9001
//!     predicates: [ 'Path=/{tenant}/orders/**' ]
//!     filters: [ 'Tenant=X-Tenant, acme, globex', StripPrefix=1 ]
//! ```

use std::process::ExitCode;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use msa_gateway::filter::{Exchange, FilterFuture, Filters, GatewayFilter};

/// The tenant from the first path segment, checked against the route's list.
#[derive(Debug)]
struct Tenant {
    header: HeaderName,
    allowed: Vec<String>,
}

impl GatewayFilter for Tenant {
    fn request<'a>(&'a self, exchange: &'a mut Exchange) -> FilterFuture<'a> {
        Box::pin(async move {
            let tenant = exchange.path().split('/').nth(1).unwrap_or_default();
            if !self.allowed.iter().any(|t| t == tenant) {
                let refused = Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .body(format!("tenant {tenant:?} is not served here\n").into())
                    .expect("a valid answer");
                return Err(refused);
            }
            let value = HeaderValue::from_str(tenant).expect("a path segment is a valid value");
            exchange.headers_mut().insert(self.header.clone(), value);
            Ok(())
        })
    }
}

/// Stamps every answer with the gateway's name.
#[derive(Debug)]
struct ServedBy(HeaderValue);

impl GatewayFilter for ServedBy {
    fn response(&self, _: &Exchange, response: &mut http::response::Parts) {
        response
            .headers
            .insert(HeaderName::from_static("x-served-by"), self.0.clone());
    }
}

/// This binary's filters.
pub(crate) fn filters() -> Filters {
    Filters::new()
        .filter("Tenant", |args| {
            let header = args.required("header", 0)?;
            let header = HeaderName::try_from(header).map_err(|e| e.to_string())?;
            let allowed = args.list("tenants", 1)?;
            if allowed.is_empty() {
                return Err("Tenant needs at least one tenant after the header".into());
            }
            Ok(Tenant { header, allowed })
        })
        .global(ServedBy(HeaderValue::from_static("edge-1")))
}

#[tokio::main]
async fn main() -> ExitCode {
    msa_gateway::cli::main(filters()).await
}
