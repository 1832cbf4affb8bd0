//! The clients an [`App`](super::App) makes: one connection pool, the load balancer and
//! the resilience stacks, shared by every client and clone, and updated in place when a
//! builder call or a config change comes after the client was made.

use std::sync::{Arc, RwLock};

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

/// What every client of one app shares.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    http: Arc<RwLock<reqwest::Client>>,
    #[cfg(feature = "discovery")]
    balancer: Arc<RwLock<Option<msa_discovery::balance::Balancer>>>,
    #[cfg(feature = "breaker")]
    pub(crate) resilience: msa_breaker::stack::Resilience,
}

impl Clients {
    pub(crate) fn new(
        http: reqwest::Client,
        #[cfg(feature = "breaker")] resilience: msa_breaker::stack::Resilience,
    ) -> Self {
        Clients {
            http: Arc::new(RwLock::new(http)),
            #[cfg(feature = "discovery")]
            balancer: Arc::default(),
            #[cfg(feature = "breaker")]
            resilience,
        }
    }

    /// Every client sends through `http` from now on.
    pub(crate) fn set_http(&self, http: reqwest::Client) {
        *msa_core::sync::write(&self.http) = http;
    }

    /// Every client balances with `balancer` from now on.
    #[cfg(feature = "discovery")]
    pub(crate) fn set_balancer(&self, balancer: Option<msa_discovery::balance::Balancer>) {
        *msa_core::sync::write(&self.balancer) = balancer;
    }

    /// A client: trace and metrics, then the resilience stack named by the target host,
    /// then the load balancer, then the shared pool.
    pub(crate) fn client(&self) -> reqwest_middleware::ClientWithMiddleware {
        let http = msa_core::sync::read(&self.http).clone();
        let builder = reqwest_middleware::ClientBuilder::new(http)
            .with(msa_core::http::TraceMiddleware::new());
        #[cfg(feature = "breaker")]
        let builder = builder.with(msa_breaker::middleware::ResilienceMiddleware::new(
            self.resilience.clone(),
        ));
        #[cfg(feature = "discovery")]
        let builder = builder.with(Balance(self.balancer.clone()));
        builder.with(Execute(self.http.clone())).build()
    }
}

/// Balances with the app's balancer of the moment, if it has one.
#[cfg(feature = "discovery")]
struct Balance(Arc<RwLock<Option<msa_discovery::balance::Balancer>>>);

#[cfg(feature = "discovery")]
#[async_trait::async_trait]
impl Middleware for Balance {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let balancer = msa_core::sync::read(&self.0).clone();
        match balancer {
            Some(balancer) => {
                msa_discovery::balance::LoadBalancerMiddleware::new(balancer)
                    .handle(req, extensions, next)
                    .await
            }
            None => next.run(req, extensions).await,
        }
    }
}

/// Sends with the app's pool of the moment (its TLS and timeout as last set).
struct Execute(Arc<RwLock<reqwest::Client>>);

#[async_trait::async_trait]
impl Middleware for Execute {
    async fn handle(
        &self,
        req: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let http = msa_core::sync::read(&self.0).clone();
        http.execute(req).await.map_err(Into::into)
    }
}
