use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{COOKIE, HeaderMap};
use http::uri::{Authority, Scheme as UriScheme, Uri};
use msa_core::{BoxError, ServiceInstance};
use tower::{Layer, Service, ServiceExt};

use super::replay::replay_request;
use super::{Balancer, BalancerConfig, NoInstance, ReplayBody, Unsent};

/// Balances requests to `http://<service-name>/...` over the service's instances; see the
/// [module docs](super).
///
/// The inner service must route by the request URI's authority, as hyper-util's pooled
/// `Client` does. A URI with an explicit port, or whose host is an IP address, is not a
/// service name: it passes through untouched.
///
/// # Examples
///
/// ```
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use msa_discovery::balance::{Balancer, BalancerConfig, LoadBalancerLayer};
/// use msa_discovery::discovery::StaticDiscovery;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let balancer = Balancer::new(StaticDiscovery::new([]), BalancerConfig::default());
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let mut orders = ServiceBuilder::new()
///     .layer(LoadBalancerLayer::new(balancer))
///     .service(client);
/// // orders.call(Request::get("http://orders/api/orders/7").body(Full::default())?)
/// # let _ = &mut orders;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LoadBalancerLayer {
    balancer: Balancer,
}

impl LoadBalancerLayer {
    /// A layer sharing `balancer` (and what it has learned) with every service it wraps.
    pub fn new(balancer: Balancer) -> Self {
        LoadBalancerLayer { balancer }
    }
}

impl<S> Layer<S> for LoadBalancerLayer {
    type Service = LoadBalancer<S>;

    fn layer(&self, inner: S) -> LoadBalancer<S> {
        LoadBalancer {
            inner,
            balancer: self.balancer.clone(),
        }
    }
}

/// The service [`LoadBalancerLayer`] makes.
#[derive(Debug, Clone)]
pub struct LoadBalancer<S> {
    inner: S,
    balancer: Balancer,
}

impl<S> LoadBalancer<S> {
    /// Balances `inner`'s requests with `balancer`.
    pub fn new(inner: S, balancer: Balancer) -> Self {
        LoadBalancer { inner, balancer }
    }
}

/// The future of a balanced request.
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
}

impl<T> ResponseFuture<T> {
    pub(crate) fn new(future: impl Future<Output = Result<T, BoxError>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(future),
        }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, B, R> Service<http::Request<B>> for LoadBalancer<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    R: 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(service) = service_name(request.uri()).map(str::to_owned) else {
            let future = self.inner.call(request);
            return ResponseFuture::new(async move { future.await.map_err(Into::into) });
        };
        // The ready clone serves the first attempt; later attempts wait for readiness.
        let clone = self.inner.clone();
        let mut ready = Some(std::mem::replace(&mut self.inner, clone.clone()));
        let balancer = self.balancer.clone();
        ResponseFuture::new(async move {
            send_balanced(
                &balancer,
                &service,
                request,
                &[],
                move |instance, mut request| {
                    let uri = instance_uri(instance, request.uri());
                    let first = ready.take();
                    let mut inner = clone.clone();
                    async move {
                        *request.uri_mut() = uri?;
                        match first {
                            Some(mut ready) => ready.call(request).await.map_err(Into::into),
                            None => inner
                                .ready()
                                .await
                                .map_err(Into::into)?
                                .call(request)
                                .await
                                .map_err(Into::into),
                        }
                    }
                },
                is_connect_box,
                unsent::<B>,
            )
            .await
            .map_err(BoxError::from)
        })
    }
}

/// The request an [`Unsent`] error hands back.
fn unsent<B: 'static>(error: BoxError) -> Result<http::Request<B>, BoxError> {
    error
        .downcast::<Unsent<B>>()
        .map(|unsent| unsent.into_request())
}

/// A request the balancer can send: its sticky key, and a copy for another attempt.
pub(crate) trait Attempt: Sized {
    fn sticky(&self, config: &BalancerConfig) -> Option<String>;
    fn replay(&self) -> Option<Self>;
}

/// An answer whose outcome the balancer learns from.
pub(crate) trait Answer {
    fn is_server_error(&self) -> bool;
}

impl<B: ReplayBody> Attempt for http::Request<B> {
    fn sticky(&self, config: &BalancerConfig) -> Option<String> {
        sticky_key(config, self.headers())
    }

    fn replay(&self) -> Option<Self> {
        replay_request(self)
    }
}

impl<R> Answer for http::Response<R> {
    fn is_server_error(&self) -> bool {
        self.status().is_server_error()
    }
}

/// Why a balanced request failed.
pub(crate) enum Failed<E> {
    NoInstance(NoInstance),
    Send(E),
}

impl<E: Into<BoxError>> From<Failed<E>> for BoxError {
    fn from(failed: Failed<E>) -> BoxError {
        match failed {
            Failed::NoInstance(error) => error.into(),
            Failed::Send(error) => error.into(),
        }
    }
}

/// Sends `request` to an instance of `service` chosen by `balancer`, with `send`, and
/// reports the outcome; a connection failure (as `is_connect` tells) is tried again on
/// other instances, with a copy of the request made beforehand or, where there is none,
/// the request the error hands back (`recover`, see [`Unsent`]).
pub(crate) async fn send_balanced<Q, P, E, F, Fut>(
    balancer: &Balancer,
    service: &str,
    mut request: Q,
    prior: &[String],
    mut send: F,
    is_connect: fn(&E) -> bool,
    recover: fn(E) -> Result<Q, E>,
) -> Result<P, Failed<E>>
where
    Q: Attempt,
    P: Answer,
    F: FnMut(&ServiceInstance, Q) -> Fut,
    Fut: Future<Output = Result<P, E>>,
    E: fmt::Display,
{
    let sticky = request.sticky(balancer.config());
    let retries = balancer.config().connect_retries as usize;
    let mut tried: Vec<String> = Vec::new();
    loop {
        let excluded: Vec<&str> = prior.iter().chain(&tried).map(String::as_str).collect();
        let pick = match balancer.pick_excluding(service, sticky.as_deref(), &excluded) {
            Ok(pick) => pick,
            // Right after start, discovery may not have answered yet: wait for it once.
            Err(_) if tried.is_empty() && balancer.discovered(service).await => continue,
            Err(none) => return Err(Failed::NoInstance(none)),
        };
        let another = tried.len() < retries && pick.alternatives() > tried.len();
        let replay = if another { request.replay() } else { None };
        match send(pick.instance(), request).await {
            Ok(answer) => {
                if answer.is_server_error() {
                    pick.failure();
                } else {
                    pick.success();
                }
                return Ok(answer);
            }
            Err(error) => {
                let id = pick.instance().id.clone();
                pick.failure();
                if !another || !is_connect(&error) {
                    return Err(Failed::Send(error));
                }
                // Said once the request is in hand: one that cannot be had again fails here.
                let reason = error.to_string();
                request = match replay {
                    Some(next) => next,
                    None => recover(error).map_err(Failed::Send)?,
                };
                tracing::debug!(%service, instance = %id, error = %reason,
                    "connection failed; trying another instance");
                tried.push(id);
            }
        }
    }
}

pub(crate) fn is_connect_box(error: &BoxError) -> bool {
    msa_core::http::client::is_connect_failure(&**error)
}

/// The service a URI names, if it names one: a host without a port that is not an IP
/// address.
pub(crate) fn service_name(uri: &Uri) -> Option<&str> {
    let host = uri.host()?;
    if uri.port().is_some() || host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(host)
}

/// `uri` with the instance's scheme and address.
pub(crate) fn instance_uri(instance: &ServiceInstance, uri: &Uri) -> Result<Uri, BoxError> {
    let authority = Authority::try_from(instance.authority()).map_err(|e| {
        format!(
            "instance {} has an invalid address {:?}: {e}",
            instance.id,
            instance.authority()
        )
    })?;
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(UriScheme::try_from(instance.scheme.as_str()).unwrap_or(UriScheme::HTTP));
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Ok(Uri::from_parts(parts)?)
}

/// The request's sticky key: the configured header, else the configured cookie.
pub(crate) fn sticky_key(config: &BalancerConfig, headers: &HeaderMap) -> Option<String> {
    if let Some(name) = &config.sticky_header
        && let Some(value) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
    {
        return Some(value.to_owned());
    }
    let name = config.sticky_cookie.as_deref()?;
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_hosts_without_ports_or_ip_literals() {
        let name = |uri: &str| service_name(&uri.parse().unwrap()).map(str::to_owned);
        assert_eq!(name("http://orders/api?x=1").as_deref(), Some("orders"));
        assert_eq!(name("http://orders:8080/api"), None);
        assert_eq!(name("http://10.0.0.7/api"), None);
        assert_eq!(name("http://[::1]/api"), None);
        assert_eq!(name("/relative"), None);
    }

    #[test]
    fn rewrites_scheme_and_authority_only() {
        let instance = ServiceInstance::new("orders", "10.0.0.7", 8081);
        let uri = instance_uri(&instance, &"http://orders/api/x?y=1".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://10.0.0.7:8081/api/x?y=1");
        let instance =
            ServiceInstance::new("orders", "::1", 8443).with_scheme(msa_core::Scheme::Https);
        let uri = instance_uri(&instance, &"http://orders".parse().unwrap()).unwrap();
        assert_eq!(uri, "https://[::1]:8443/");
    }

    #[test]
    fn sticky_key_from_header_or_cookie() {
        let mut config = BalancerConfig {
            sticky_cookie: Some("sc-lb-instance-id".into()),
            ..BalancerConfig::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            "a=1; sc-lb-instance-id=orders-2; b=2".parse().unwrap(),
        );
        assert_eq!(sticky_key(&config, &headers).as_deref(), Some("orders-2"));
        config.sticky_header = Some("x-user".into());
        assert_eq!(sticky_key(&config, &headers).as_deref(), Some("orders-2"));
        headers.insert("x-user", "alice".parse().unwrap());
        assert_eq!(sticky_key(&config, &headers).as_deref(), Some("alice"));
    }
}
