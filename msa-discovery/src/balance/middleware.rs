use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use super::layer::{Answer, Attempt, Failed, send_balanced, sticky_key};
use super::{Balancer, BalancerConfig};
use msa_core::http::client::is_connect_failure;

/// Balances a `reqwest_middleware` client's calls to services, as Spring's
/// `@LoadBalanced` clients do; see the [module docs](super).
///
/// - `lb://<service>/...` always names a service (Spring's scheme): the call goes to one
///   of its instances, over `http` or `https` as the instance registered.
/// - `http(s)://<name>/...` names a service when `<name>` is a single label (no dot, no
///   port, not an IP address or `localhost`) that discovery knows
///   ([`Balancer::is_service`]).
/// - Anything else goes out as it is: `https://api.example.com`, `http://10.0.0.7:8080`.
///
/// A middleware placed before this one that runs the rest of the chain again (a retry)
/// gets a different instance each time while one is left: the instances a call has been
/// sent to are remembered in its extensions.
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
/// // client.get("lb://orders/api/orders/7").send().await
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

/// The instances one call has been sent to, across the attempts of a retry.
#[derive(Clone, Debug, Default)]
struct Tried(Vec<String>);

/// Whether a host could name a service: one label, not an IP address or `localhost`.
fn could_be_service(url: &reqwest::Url) -> Option<&str> {
    let host = url.host_str()?;
    if url.port().is_some()
        || host.contains(['.', '[', ':'])
        || host.eq_ignore_ascii_case("localhost")
    {
        return None;
    }
    Some(host)
}

/// `url` sent to `instance`: its scheme and address, the rest kept (an `lb:` URL cannot
/// change its scheme in place, so it is rebuilt).
fn moved(url: &reqwest::Url, instance: &msa_core::ServiceInstance) -> Option<reqwest::Url> {
    let mut text = format!(
        "{}://{}{}",
        instance.scheme.as_str(),
        instance.authority(),
        url.path()
    );
    if let Some(query) = url.query() {
        text.push('?');
        text.push_str(query);
    }
    let mut moved = reqwest::Url::parse(&text).ok()?;
    if !url.username().is_empty() {
        moved.set_username(url.username()).ok()?;
        moved.set_password(url.password()).ok()?;
    }
    Some(moved)
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
        let service = if url.scheme().eq_ignore_ascii_case("lb") {
            match url.host_str() {
                Some(name) => name.to_owned(),
                None => {
                    return Err(reqwest_middleware::Error::middleware(InvalidAddress(
                        "an lb: URL names no service".into(),
                    )));
                }
            }
        } else {
            match could_be_service(url) {
                Some(name) if self.balancer.is_service(name).await => name.to_owned(),
                _ => return next.run(req, extensions).await,
            }
        };
        let mut tried = extensions.get::<Tried>().cloned().unwrap_or_default();
        let prior = tried.0.clone();
        let result = send_balanced(
            &self.balancer,
            &service,
            req,
            &prior,
            |instance, mut req| {
                tried.0.push(instance.id.clone());
                let target = moved(req.url(), instance);
                let address = instance.authority();
                let next = next.clone();
                let mut extensions = extensions.clone();
                async move {
                    *req.url_mut() = target.ok_or_else(|| {
                        reqwest_middleware::Error::middleware(InvalidAddress(address))
                    })?;
                    next.run(req, &mut extensions).await
                }
            },
            is_connect,
            Err,
        )
        .await;
        extensions.insert(tried);
        result.map_err(|failed| match failed {
            Failed::NoInstance(error) => reqwest_middleware::Error::middleware(error),
            Failed::Send(error) => error,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("instance address cannot go in a URL: {0}")]
struct InvalidAddress(String);
