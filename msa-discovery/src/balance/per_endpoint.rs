use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use msa_core::{BoxError, ServiceInstance};
use tower::{Service, ServiceExt};

use super::layer::{ResponseFuture, is_connect_box, send_balanced};
use super::{Balancer, ReplayBody};

/// Balances one service's requests over per-instance clients, for clients bound to a
/// single address such as a tonic `Channel`. `make` builds an instance's client the first
/// time the instance is chosen (and again if its address changes); the request URI is
/// left as it is.
///
/// # Examples
///
/// With tonic (feature `tonic`; `connect_lazy` makes no connection until used; the test
/// `tests/tonic.rs` runs this against real tonic servers):
///
/// ```ignore
/// use msa_discovery::balance::EndpointBalancer;
/// use tonic::transport::{Channel, Endpoint};
///
/// let inventory = EndpointBalancer::new(balancer, "inventory", |instance| {
///     Endpoint::from_shared(instance.uri().to_string()).unwrap().connect_lazy()
/// });
/// let client = InventoryClient::new(inventory);
/// ```
pub struct EndpointBalancer<F, S> {
    balancer: Balancer,
    service: Arc<str>,
    make: Arc<F>,
    clients: Arc<Mutex<HashMap<String, (String, S)>>>,
}

impl<F, S> EndpointBalancer<F, S>
where
    F: Fn(&ServiceInstance) -> S,
{
    /// Balances requests over the instances of `service`.
    pub fn new(balancer: Balancer, service: impl Into<Arc<str>>, make: F) -> Self {
        EndpointBalancer {
            balancer,
            service: service.into(),
            make: Arc::new(make),
            clients: Arc::default(),
        }
    }
}

impl<F, S: Clone> EndpointBalancer<F, S>
where
    F: Fn(&ServiceInstance) -> S,
{
    fn client(&self, instance: &ServiceInstance) -> S {
        let mut clients = msa_core::sync::lock(&self.clients);
        let address = instance.authority();
        match clients.get(&instance.id) {
            Some((known, client)) if *known == address => client.clone(),
            _ => {
                let client = (self.make)(instance);
                clients.insert(instance.id.clone(), (address, client.clone()));
                client
            }
        }
    }
}

impl<F, S> Clone for EndpointBalancer<F, S> {
    fn clone(&self) -> Self {
        EndpointBalancer {
            balancer: self.balancer.clone(),
            service: self.service.clone(),
            make: self.make.clone(),
            clients: self.clients.clone(),
        }
    }
}

impl<F, S> fmt::Debug for EndpointBalancer<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBalancer")
            .field("service", &self.service)
            .field("balancer", &self.balancer)
            .finish_non_exhaustive()
    }
}

impl<F, S, B, R> Service<http::Request<B>> for EndpointBalancer<F, S>
where
    F: Fn(&ServiceInstance) -> S + Send + Sync + 'static,
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    R: 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<http::Response<R>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is per instance; it is awaited once the instance is chosen.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        ResponseFuture::new(async move {
            send_balanced(
                &this.balancer,
                &this.service,
                request,
                &[],
                |instance, request| {
                    let client = this.client(instance);
                    async move { client.oneshot(request).await.map_err(Into::into) }
                },
                is_connect_box,
                Err,
            )
            .await
            .map_err(BoxError::from)
        })
    }
}
