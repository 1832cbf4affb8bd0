use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use msa_core::ServiceInstance;
use tokio::sync::watch;

use super::{Discovery, Instances};

/// Follows msa-registry's native watch (`/msa/v1/services/{service}`): one long-poll per
/// service in use, answered within milliseconds of a change. While the registry is
/// unreachable, the last known instances stay and the poll retries with backoff.
#[derive(Debug, Clone)]
pub struct RegistryDiscovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    wait: Duration,
    services: Mutex<BTreeMap<String, watch::Sender<Instances>>>,
}

#[derive(serde::Deserialize)]
struct Answer {
    index: u64,
    instances: Vec<ServiceInstance>,
}

impl RegistryDiscovery {
    /// Discovery through the registry at `base` (`http://127.0.0.1:8761`). Call inside a
    /// tokio runtime: the watches run as tasks, one per service, until this and every
    /// receiver are dropped.
    pub fn new(base: impl Into<String>) -> Self {
        RegistryDiscovery {
            inner: Arc::new(Inner {
                http: reqwest::Client::new(),
                base: base.into().trim_end_matches('/').to_owned(),
                wait: Duration::from_secs(30),
                services: Mutex::default(),
            }),
        }
    }
}

impl Discovery for RegistryDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        let service = service.to_ascii_lowercase();
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = services.get(&service) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Instances::from(Vec::new()));
        services.insert(service.clone(), sender.clone());
        drop(services);
        tokio::spawn(follow(Arc::downgrade(&self.inner), service, sender));
        receiver
    }
}

async fn follow(inner: std::sync::Weak<Inner>, service: String, sender: watch::Sender<Instances>) {
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        let Some(live) = inner.upgrade() else { return };
        let url = format!(
            "{}/msa/v1/services/{service}?index={index}&wait={}ms",
            live.base,
            live.wait.as_millis()
        );
        let request = live
            .http
            .get(url)
            .timeout(live.wait + Duration::from_secs(10));
        drop(live);
        let answer = match request.send().await {
            Ok(response) if response.status().is_success() => {
                response.json::<Answer>().await.map_err(|e| e.to_string())
            }
            Ok(response) => Err(format!("registry answered {}", response.status())),
            Err(error) => Err(error.to_string()),
        };
        match answer {
            Ok(answer) => {
                if failing {
                    tracing::info!(%service, "registry reachable again");
                }
                failing = false;
                backoff = Duration::from_millis(100);
                if answer.index != index || index == 0 {
                    index = answer.index;
                    sender.send_replace(answer.instances.into());
                }
            }
            Err(reason) => {
                if !failing {
                    tracing::warn!(%service, %reason, "registry unreachable; keeping the last known instances");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
