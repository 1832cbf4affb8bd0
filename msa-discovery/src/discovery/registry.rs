use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use msa_core::ServiceInstance;
use msa_core::backoff::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Catalog, Discovery, EurekaDiscovery, Instances, Watches};
use crate::service_url::ServiceUrls;

/// Follows msa-registry's native watch (`/msa/v1/services/{service}`): one long-poll per
/// service in use, answered within milliseconds of a change. While the registry is
/// unreachable, the last known instances stay and the poll retries with backoff.
///
/// A server without the watch (Spring's Eureka server answers it 404) is followed through
/// its Eureka API instead, with [`EurekaDiscovery`]'s delta polling: one setting works
/// with either registry.
///
/// A registry that restarted (its index went back) knows nothing until instances renew
/// and find they must register again, which takes up to one renewal interval. For a
/// grace period after a restart (default 30 s, the default lease) instances known before
/// it stay listed until the registry knows them again, so callers keep working.
#[derive(Debug, Clone)]
pub struct RegistryDiscovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    urls: ServiceUrls,
    wait: Duration,
    restart_grace: Duration,
    services: Watches,
    /// Spring's Eureka server has no watch: its delta, once a service's watch found so.
    eureka: std::sync::OnceLock<EurekaDiscovery>,
}

#[derive(serde::Deserialize)]
struct Answer {
    index: u64,
    instances: Vec<ServiceInstance>,
}

impl RegistryDiscovery {
    /// Discovery through the registry at `base`, in any form Spring users write it
    /// (`http://127.0.0.1:8761`, `http://127.0.0.1:8761/eureka/`), or several
    /// comma-separated, tried in turn (see [`ServiceUrls`]). Call inside a tokio runtime:
    /// the watches run as tasks, one per service, until this and every receiver are
    /// dropped.
    pub fn new(base: impl AsRef<str>) -> Self {
        Self::with_urls(ServiceUrls::lenient(base.as_ref()))
    }

    /// Discovery through the registries `urls`.
    pub fn with_urls(urls: ServiceUrls) -> Self {
        Self::with_client(urls, reqwest::Client::new())
    }

    /// Discovery through the registries `urls`, calling them with `http` (TLS roots,
    /// client certificates, proxies).
    pub fn with_client(urls: ServiceUrls, http: reqwest::Client) -> Self {
        RegistryDiscovery {
            inner: Arc::new(Inner {
                http,
                urls,
                wait: Duration::from_secs(30),
                restart_grace: Duration::from_secs(30),
                services: Watches::default(),
                eureka: std::sync::OnceLock::new(),
            }),
        }
    }

    /// How long instances known before a registry restart stay listed while the
    /// registry relearns them (default 30 s). Zero turns it off.
    ///
    /// Set it before the first [`watch`](Discovery::watch).
    pub fn restart_grace(mut self, grace: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.restart_grace = grace;
        }
        self
    }
}

impl RegistryDiscovery {
    /// Every service's instances, now and as they change: msa-registry's watch of the
    /// whole registry (`/msa/v1/services`), or a Eureka server's delta when it has none.
    /// While the registry is unreachable, the last known catalog stays. The follower runs
    /// until every receiver is dropped.
    pub fn catalog(&self) -> watch::Receiver<Catalog> {
        let (sender, receiver) = watch::channel(Catalog::default());
        tokio::spawn(follow_all(self.inner.clone(), sender));
        receiver
    }
}

#[derive(serde::Deserialize)]
struct CatalogAnswer {
    index: u64,
    services: BTreeMap<String, Vec<ServiceInstance>>,
}

async fn follow_all(inner: Arc<Inner>, sender: watch::Sender<Catalog>) {
    let mut index = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing = false;
    loop {
        let which = inner.urls.current();
        let url = format!(
            "{}/msa/v1/services?index={index}&wait={}ms",
            inner.urls.root(),
            inner.wait.as_millis()
        );
        let request = inner
            .http
            .get(url)
            .timeout(inner.wait + Duration::from_secs(10));
        let answer = tokio::select! {
            answer = request.send() => answer,
            () = sender.closed() => return,
        };
        let answer = match answer {
            Ok(response) if response.status().is_success() => response
                .json::<CatalogAnswer>()
                .await
                .map_err(|e| e.without_url().to_string()),
            Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                tracing::info!("the registry has no watch API; following its Eureka delta");
                let eureka = inner
                    .eureka
                    .get_or_init(|| {
                        EurekaDiscovery::with_client(inner.urls.clone(), inner.http.clone())
                    })
                    .clone();
                drop(inner);
                return forward(eureka.catalog(), sender).await;
            }
            Ok(response) => Err(format!("registry answered {}", response.status())),
            Err(error) => Err(error.without_url().to_string()),
        };
        match answer {
            Ok(answer) => {
                if failing {
                    tracing::info!("registry reachable again");
                }
                failing = false;
                backoff.reset();
                if answer.index != index || index == 0 {
                    index = answer.index;
                    let catalog = answer
                        .services
                        .into_iter()
                        .map(|(service, list)| (service.to_ascii_lowercase(), list.into()))
                        .collect();
                    sender.send_replace(Arc::new(catalog));
                }
            }
            Err(reason) => {
                inner.urls.failed(which);
                if !failing {
                    tracing::warn!(%reason, "registry unreachable; keeping the last known catalog");
                    failing = true;
                }
                tokio::select! {
                    () = backoff.wait() => {}
                    () = sender.closed() => return,
                }
            }
        }
    }
}

impl Discovery for RegistryDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        self.inner.services.watch(service, |service, sender| {
            tokio::spawn(follow(Arc::downgrade(&self.inner), service, sender));
        })
    }
}

async fn follow(inner: std::sync::Weak<Inner>, service: String, sender: watch::Sender<Instances>) {
    let mut index = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing = false;
    // After a registry restart: the instances known before it, kept until this instant.
    let mut remembered: Option<(Instances, Instant)> = None;
    loop {
        let Some(live) = inner.upgrade() else { return };
        let mut wait = live.wait;
        if let Some((_, until)) = &remembered {
            // Wake when the grace period ends, to drop what the registry never relearned.
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        let grace = live.restart_grace;
        let which = live.urls.current();
        let url = format!(
            "{}/msa/v1/services/{service}?index={index}&wait={}ms",
            live.urls.root(),
            wait.as_millis()
        );
        let request = live.http.get(url).timeout(wait + Duration::from_secs(10));
        let urls = live.urls.clone();
        drop(live);
        let answer = match request.send().await {
            Ok(response) if response.status().is_success() => response
                .json::<Answer>()
                .await
                .map_err(|e| e.without_url().to_string()),
            Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                // Not msa-registry: follow its Eureka API from now on.
                let Some(live) = inner.upgrade() else { return };
                tracing::info!(%service, "the registry has no watch API; following its Eureka delta");
                let eureka = live
                    .eureka
                    .get_or_init(|| {
                        EurekaDiscovery::with_client(live.urls.clone(), live.http.clone())
                    })
                    .clone();
                drop(live);
                return forward(eureka.watch(&service), sender).await;
            }
            Ok(response) => Err(format!("registry answered {}", response.status())),
            // Without the URL: a registry URL may carry credentials.
            Err(error) => Err(error.without_url().to_string()),
        };
        if answer.is_err() {
            urls.failed(which);
        }
        match answer {
            Ok(answer) => {
                if failing {
                    tracing::info!(%service, "registry reachable again");
                }
                failing = false;
                backoff.reset();
                if answer.index < index && !grace.is_zero() {
                    tracing::info!(%service, "registry restarted; keeping the instances known before for {grace:?}");
                    remembered = Some((sender.borrow().clone(), Instant::now() + grace));
                }
                if remembered
                    .as_ref()
                    .is_some_and(|(_, until)| Instant::now() >= *until)
                {
                    remembered = None;
                    index = 0; // publish the registry's own list
                }
                if answer.index != index || index == 0 {
                    index = answer.index;
                    let mut list = answer.instances;
                    if let Some((before, _)) = &remembered {
                        let missing: Vec<ServiceInstance> = before
                            .iter()
                            .filter(|old| !list.iter().any(|new| new.id == old.id))
                            .cloned()
                            .collect();
                        if missing.is_empty() {
                            remembered = None;
                        }
                        list.extend(missing);
                    }
                    sender.send_replace(list.into());
                }
            }
            Err(reason) => {
                if !failing {
                    tracing::warn!(%service, %reason, "registry unreachable; keeping the last known instances");
                    failing = true;
                }
                backoff.wait().await;
            }
        }
    }
}

/// Forwards another backend's lists until either side is dropped.
async fn forward<T: Clone>(mut from: watch::Receiver<T>, to: watch::Sender<T>) {
    loop {
        let now = from.borrow_and_update().clone();
        to.send_replace(now);
        tokio::select! {
            changed = from.changed() => if changed.is_err() { return },
            () = to.closed() => return,
        }
    }
}
