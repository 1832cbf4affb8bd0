use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use msa_core::ServiceInstance;
use tokio::sync::watch;

use super::{Catalog, Discovery, Instances};
use crate::eureka::{ActionType, Applications, ApplicationsEnvelope, InstanceInfo, apps_hashcode};
use crate::service_url::ServiceUrls;

/// Follows a Eureka server (Spring's, or msa-registry) the way Eureka's own client does:
/// one full fetch of `/apps/`, then `/apps/delta` every interval (the paths as Spring's
/// Eureka client writes them), applied to the local copy
/// and checked against the server's `apps__hashcode`; a mismatch fetches everything again.
/// While the server is unreachable, the last known instances stay.
///
/// The default interval is 5 s (Eureka's client waits 30 s). msa-registry also offers a
/// watch that answers within milliseconds: use [`RegistryDiscovery`](super::RegistryDiscovery)
/// with it.
///
/// # Examples
///
/// ```no_run
/// use msa_discovery::discovery::{Discovery, EurekaDiscovery};
///
/// # #[tokio::main] async fn main() {
/// let eureka = EurekaDiscovery::new("http://eureka.internal:8761/eureka");
/// let orders = eureka.watch("orders");
/// # let _ = orders;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EurekaDiscovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    urls: ServiceUrls,
    interval: Duration,
    services: Mutex<BTreeMap<String, watch::Sender<Instances>>>,
    /// Every service's instances, for [`EurekaDiscovery::catalog`].
    catalog: watch::Sender<Catalog>,
    /// Wakes the fetcher when a service is first watched, so it publishes at once.
    wake: tokio::sync::Notify,
    started: std::sync::Once,
}

impl EurekaDiscovery {
    /// Discovery through the Eureka server at `base`, in any form Spring users write it
    /// (`http://host:8761/eureka/`, `http://host:8761`), or several comma-separated, tried in
    /// turn (see [`ServiceUrls`]). Call inside a tokio runtime: the fetcher runs as a task
    /// until this and every receiver are dropped.
    pub fn new(base: impl AsRef<str>) -> Self {
        Self::with_urls(ServiceUrls::lenient(base.as_ref()))
    }

    /// Discovery through the Eureka servers `urls`.
    pub fn with_urls(urls: ServiceUrls) -> Self {
        Self::with_client(urls, reqwest::Client::new())
    }

    /// Discovery through the Eureka servers `urls`, calling them with `http` (TLS roots,
    /// client certificates, proxies).
    pub fn with_client(urls: ServiceUrls, http: reqwest::Client) -> Self {
        EurekaDiscovery {
            inner: Arc::new(Inner {
                http,
                urls,
                interval: Duration::from_secs(5),
                services: Mutex::default(),
                catalog: watch::Sender::new(Catalog::default()),
                wake: tokio::sync::Notify::new(),
                started: std::sync::Once::new(),
            }),
        }
    }

    /// How often the delta is fetched (default 5 s). Set it before the first
    /// [`watch`](Discovery::watch).
    pub fn interval(mut self, interval: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.interval = interval.max(Duration::from_millis(10));
        }
        self
    }
}

impl EurekaDiscovery {
    /// Every service's instances, now and at each fetch that changes them (an empty
    /// catalog until the first fetch).
    pub fn catalog(&self) -> watch::Receiver<Catalog> {
        let receiver = self.inner.catalog.subscribe();
        self.inner.started.call_once(|| {
            tokio::spawn(fetch(Arc::downgrade(&self.inner)));
        });
        self.inner.wake.notify_one();
        receiver
    }
}

impl Discovery for EurekaDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        let service = service.to_ascii_lowercase();
        let receiver = {
            let mut services = msa_core::sync::lock(&self.inner.services);
            services
                .entry(service)
                .or_insert_with(|| watch::Sender::new(Instances::from(Vec::new())))
                .subscribe()
        };
        self.inner.started.call_once(|| {
            tokio::spawn(fetch(Arc::downgrade(&self.inner)));
        });
        self.inner.wake.notify_one();
        receiver
    }
}

/// The local copy: instances by application (lower-cased) and id.
type Local = BTreeMap<String, BTreeMap<String, InstanceInfo>>;

async fn fetch(inner: Weak<Inner>) {
    let mut local: Option<Local> = None;
    let mut failing = false;
    loop {
        let Some(live) = inner.upgrade() else { return };
        let outcome = match local.take() {
            None => get(&live, "apps/").await.map(|apps| {
                local = Some(index(apps));
            }),
            Some(mut copy) => match get(&live, "apps/delta").await {
                Ok(delta) => {
                    let expected = delta.apps_hashcode.clone();
                    apply(&mut copy, delta);
                    let actual =
                        apps_hashcode(copy.values().flat_map(|a| a.values().map(|i| i.status)));
                    if actual == expected {
                        local = Some(copy);
                    } else {
                        tracing::debug!(%expected, %actual,
                            "delta does not reconcile; fetching the full registry");
                    }
                    Ok(())
                }
                Err(error) => {
                    local = Some(copy);
                    Err(error)
                }
            },
        };
        match (&outcome, &local) {
            (Ok(()), Some(copy)) => {
                if failing {
                    tracing::info!(base = %live.urls.eureka(), "Eureka server reachable again");
                }
                failing = false;
                publish(&live, copy);
            }
            // A hash mismatch: fetch everything again at once.
            (Ok(()), None) => continue,
            (Err(reason), _) => {
                if !failing {
                    tracing::warn!(%reason, "Eureka server unreachable; keeping the last known instances");
                    failing = true;
                }
            }
        }
        // Holding `live` while waiting only delays noticing a drop by one interval.
        tokio::select! {
            () = tokio::time::sleep(live.interval) => {}
            () = live.wake.notified() => {}
        }
    }
}

/// Fetches `path` from the current server; a failure moves on to the next one.
async fn get(inner: &Inner, path: &str) -> Result<Applications, String> {
    let which = inner.urls.current();
    let result = get_from(inner, &format!("{}/{path}", inner.urls.eureka())).await;
    if result.is_err() {
        inner.urls.failed(which);
    }
    result
}

async fn get_from(inner: &Inner, target: &str) -> Result<Applications, String> {
    // Messages name the URL without its credentials.
    let url = msa_core::secrets::mask_url(target);
    let response = inner
        .http
        .get(target)
        .header(http::header::ACCEPT, "application/json")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{url}: {}", e.without_url()))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{url}: {}", e.without_url()))?;
    serde_json::from_slice::<ApplicationsEnvelope>(&body)
        .map(|envelope| envelope.applications)
        .map_err(|e| format!("{url}: not a Eureka applications document: {e}"))
}

fn index(apps: Applications) -> Local {
    let mut local = Local::new();
    for app in apps.application {
        let entry = local.entry(app.name.to_ascii_lowercase()).or_default();
        for instance in app.instance {
            entry.insert(instance.instance_id.clone(), instance);
        }
    }
    local
}

fn apply(local: &mut Local, delta: Applications) {
    for app in delta.application {
        let name = app.name.to_ascii_lowercase();
        for instance in app.instance {
            match instance.action_type {
                Some(ActionType::Deleted) => {
                    if let Some(entry) = local.get_mut(&name) {
                        entry.remove(&instance.instance_id);
                    }
                }
                _ => {
                    local
                        .entry(name.clone())
                        .or_default()
                        .insert(instance.instance_id.clone(), instance);
                }
            }
        }
    }
    local.retain(|_, instances| !instances.is_empty());
}

fn publish(inner: &Inner, local: &Local) {
    if inner.catalog.receiver_count() > 0 {
        let catalog: BTreeMap<String, Instances> = local
            .iter()
            .map(|(service, instances)| {
                let list: Vec<ServiceInstance> = instances
                    .values()
                    .map(InstanceInfo::to_service_instance)
                    .collect();
                (service.clone(), list.into())
            })
            .collect();
        inner.catalog.send_if_modified(|current| {
            let changed = **current != catalog;
            if changed {
                *current = Arc::new(catalog);
            }
            changed
        });
    }
    let services = msa_core::sync::lock(&inner.services);
    for (service, sender) in services.iter() {
        let now: Vec<ServiceInstance> = local
            .get(service)
            .map(|instances| {
                instances
                    .values()
                    .map(InstanceInfo::to_service_instance)
                    .collect()
            })
            .unwrap_or_default();
        sender.send_if_modified(|current| {
            if current[..] == now[..] {
                return false;
            }
            *current = now.into();
            true
        });
    }
}
