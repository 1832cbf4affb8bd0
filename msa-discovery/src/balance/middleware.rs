use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use super::layer::{Answer, Attempt, Failed, is_connect_failure, send_balanced, sticky_key};
use super::{Balancer, BalancerConfig};

/// Balances a `reqwest_middleware` client's requests to `http://<service-name>/...`; see
/// the [module docs](super). URLs with a port or an IP address pass through untouched.
///
/// # Examples
///
/// ```
/// use msa_discovery::balance::{Balancer, BalancerConfig, LoadBalancerMiddleware};
/// use msa_discovery::discovery::StaticDiscovery;
///
/// let balancer = Balancer::new(StaticDiscovery::new([]), BalancerConfig::default());
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(LoadBalancerMiddleware::new(balancer))
///     .build();
/// // client.get("http://orders/api/orders/7").send().await
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct LoadBalancerMiddleware {
    balancer: Balancer,
}

impl LoadBalancerMiddleware {
    /// A middleware choosing instances with `balancer`.
    pub fn new(balancer: Balancer) -> Self {
        LoadBalancerMiddleware { balancer }
    }
}

impl Attempt for reqwest::Request {
    fn sticky(&self, config: &BalancerConfig) -> Option<String> {
        sticky_key(config, self.headers())
    }

    fn replay(&self) -> Option<Self> {
        self.try_clone()
    }
}

impl Answer for reqwest::Response {
    fn is_server_error(&self) -> bool {
        self.status().is_server_error()
    }
}

fn is_connect(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Reqwest(error) => error.is_connect(),
        reqwest_middleware::Error::Middleware(error) => is_connect_failure(error.as_ref()),
    }
}

#[async_trait::async_trait]
impl Middleware for LoadBalancerMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url();
        let service = match url.domain() {
            Some(name) if url.port().is_none() => name.to_owned(),
            _ => return next.run(req, extensions).await,
        };
        let result = send_balanced(
            &self.balancer,
            &service,
            req,
            |instance, mut req| {
                let url = req.url_mut();
                let moved = url
                    .set_scheme(instance.scheme.as_str())
                    .and_then(|()| url.set_host(Some(&instance.host)).map_err(|_| ()))
                    .and_then(|()| url.set_port(Some(instance.port)));
                let address = instance.authority();
                let next = next.clone();
                let mut extensions = extensions.clone();
                async move {
                    moved.map_err(|()| {
                        reqwest_middleware::Error::middleware(InvalidAddress(address))
                    })?;
                    next.run(req, &mut extensions).await
                }
            },
            is_connect,
            Err,
        )
        .await;
        result.map_err(|failed| match failed {
            Failed::NoInstance(error) => reqwest_middleware::Error::middleware(error),
            Failed::Send(error) => error,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("instance address cannot go in a URL: {0}")]
struct InvalidAddress(String);
