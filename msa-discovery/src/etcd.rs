//! Discovery and registration straight on etcd (feature `etcd`), without msa-registry: the
//! pattern of go-zero and Kratos. Each instance is one key, bound to a lease it keeps
//! alive; callers watch the service's prefix.
//!
//! Key layout (the prefix is `/msa` unless set otherwise):
//!
//! ```text
//! /msa/services/<service>/<instance id>  →  the instance as JSON (ServiceInstance's fields)
//! ```
//!
//! Service names are lower-cased. A registration's key lives as long as its lease (the
//! lease duration, 30 s by default, renewed every third of it): an instance that dies
//! disappears when its lease expires, one that stops cleanly revokes its lease and
//! disappears at once. An instance whose lease was lost (etcd restored from a backup, a
//! long partition) registers again with a new lease.
//!
//! ```no_run
//! use msa_core::{ServiceInstance, shutdown::Shutdown};
//! use msa_discovery::discovery::Discovery;
//! use msa_discovery::etcd::{EtcdDiscovery, EtcdRegistration};
//!
//! # #[tokio::main] async fn main() -> Result<(), msa_core::etcd::EtcdError> {
//! let client = msa_core::etcd::connect("etcd://10.0.0.1:2379,10.0.0.2:2379").await?;
//! let shutdown = Shutdown::new();
//! EtcdRegistration::new(client.clone(), ServiceInstance::new("orders", "10.0.0.7", 8081))
//!     .start(&shutdown);
//! let payments = EtcdDiscovery::new(client).watch("payments");
//! # let _ = payments; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use msa_core::ServiceInstance;
use msa_core::backoff::Backoff;
use msa_core::etcd::etcd_client::{Client, EventType, PutOptions};
use msa_core::etcd::{LazyClient, Update};
use msa_core::shutdown::Shutdown;
use tokio::sync::watch;

use crate::discovery::{Catalog, Discovery, Instances, Watches};

/// The default key prefix.
pub const PREFIX: &str = "/msa";

/// The largest instance document read from etcd; larger ones are skipped.
const MAX_VALUE: usize = 64 << 10;

fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{prefix}/services/{}/", service.to_ascii_lowercase())
}

/// Follows services registered in etcd; see the [module docs](self).
#[derive(Clone)]
pub struct EtcdDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    client: LazyClient,
    prefix: String,
    services: Watches,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdDiscovery {
    /// Discovery through `client` (connected, or a [`LazyClient`] that connects on first
    /// use), under the default prefix. Call inside a tokio runtime: each watched service
    /// is followed by a task until this and every receiver are dropped.
    pub fn new(client: impl Into<LazyClient>) -> Self {
        Self::with_prefix(client, PREFIX)
    }

    /// Discovery under another key prefix (several estates in one etcd).
    pub fn with_prefix(client: impl Into<LazyClient>, prefix: &str) -> Self {
        EtcdDiscovery {
            inner: Arc::new(Inner {
                client: client.into(),
                prefix: prefix.trim_end_matches('/').to_owned(),
                services: Watches::default(),
            }),
        }
    }

    /// Every service's instances, now and as they change.
    pub fn catalog(&self) -> watch::Receiver<Catalog> {
        let (sender, receiver) = watch::channel(Catalog::default());
        let prefix = format!("{}/services/", self.inner.prefix);
        let client = self.inner.client.clone();
        tokio::spawn(follow(client, prefix, move |instances| {
            let mut catalog: BTreeMap<String, Vec<ServiceInstance>> = BTreeMap::new();
            for instance in instances {
                catalog
                    .entry(instance.service.to_ascii_lowercase())
                    .or_default()
                    .push(instance);
            }
            let catalog: BTreeMap<String, Instances> = catalog
                .into_iter()
                .map(|(service, list)| (service, list.into()))
                .collect();
            sender.send_replace(Arc::new(catalog));
            !sender.is_closed()
        }));
        receiver
    }
}

impl Discovery for EtcdDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        self.inner.services.watch(service, |service, sender| {
            let prefix = service_prefix(&self.inner.prefix, &service);
            let client = self.inner.client.clone();
            tokio::spawn(follow(client, prefix, move |instances| {
                sender.send_if_modified(|current| {
                    if current[..] == instances[..] {
                        return false;
                    }
                    *current = instances.into();
                    true
                });
                !sender.is_closed()
            }));
        })
    }
}

/// Follows the instances under `prefix` ([`msa_core::etcd::follow`]); `publish` gets each
/// new list and says whether anyone still listens.
async fn follow(
    client: LazyClient,
    prefix: String,
    mut publish: impl FnMut(Vec<ServiceInstance>) -> bool + Send + 'static,
) {
    let mut known: BTreeMap<Vec<u8>, ServiceInstance> = BTreeMap::new();
    msa_core::etcd::follow(client, prefix, move |update| {
        match update {
            Update::All(kvs) => {
                known = kvs
                    .iter()
                    .filter_map(|kv| Some((kv.key().to_vec(), decode(kv.key(), kv.value())?)))
                    .collect();
            }
            Update::Events(events) => {
                for event in events {
                    let Some(kv) = event.kv() else { continue };
                    let instance = match event.event_type() {
                        EventType::Put => decode(kv.key(), kv.value()),
                        EventType::Delete => None,
                    };
                    match instance {
                        Some(instance) => known.insert(kv.key().to_vec(), instance),
                        None => known.remove(kv.key()),
                    };
                }
            }
            // The last known instances stay.
            Update::Broken(_) => return true,
        }
        publish(known.values().cloned().collect())
    })
    .await;
}

/// An instance from its key and JSON value; `None` (with a warning) for one that is too
/// large or not an instance.
fn decode(key: &[u8], value: &[u8]) -> Option<ServiceInstance> {
    if value.len() > MAX_VALUE {
        tracing::warn!(key = %String::from_utf8_lossy(key), bytes = value.len(), "instance skipped: too large");
        return None;
    }
    match serde_json::from_slice(value) {
        Ok(instance) => Some(instance),
        Err(error) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), %error, "instance skipped: not an instance");
            None
        }
    }
}

/// One instance registered in etcd; see the [module docs](self).
#[derive(Clone)]
pub struct EtcdRegistration {
    client: LazyClient,
    instance: ServiceInstance,
    key: String,
    lease: Duration,
    registered: watch::Sender<Option<i64>>,
}

impl std::fmt::Debug for EtcdRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistration")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistration {
    /// `instance`'s registration through `client` (connected, or a [`LazyClient`]), under
    /// the default prefix, with a 30 s lease.
    pub fn new(client: impl Into<LazyClient>, instance: ServiceInstance) -> Self {
        Self::with_prefix(client, instance, PREFIX)
    }

    /// The same under another key prefix.
    pub fn with_prefix(
        client: impl Into<LazyClient>,
        instance: ServiceInstance,
        prefix: &str,
    ) -> Self {
        let key = format!(
            "{}{}",
            service_prefix(prefix.trim_end_matches('/'), &instance.service),
            instance.id
        );
        EtcdRegistration {
            client: client.into(),
            instance,
            key,
            lease: Duration::from_secs(30),
            registered: watch::Sender::new(None),
        }
    }

    /// How long the key outlives the instance's last renewal (at least 2 s; renewed every
    /// third of it).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(2));
        self
    }

    /// The key it is registered under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the key is registered now (the last grant or renewal got through).
    pub fn is_registered(&self) -> bool {
        self.registered.borrow().is_some()
    }

    /// Grants a lease and puts the instance under it; the lease's id. Transient failures
    /// (a member that died or hangs) are retried.
    pub async fn register(&self) -> Result<i64, msa_core::etcd::EtcdError> {
        self.client
            .retrying(|client| self.try_register(client))
            .await
    }

    async fn try_register(&self, mut client: Client) -> Result<i64, msa_core::etcd::EtcdError> {
        let ttl = i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX);
        let lease = client.lease_grant(ttl, None).await?.id();
        let value = serde_json::to_vec(&self.instance).unwrap_or_default();
        client
            .put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        self.registered.send_replace(Some(lease));
        tracing::info!(key = %self.key, lease, "registered in etcd");
        Ok(lease)
    }

    /// Revokes the lease, which deletes the key at once.
    pub async fn deregister(&self) -> Result<(), msa_core::etcd::EtcdError> {
        let lease = self.registered.send_replace(None);
        self.client
            .retrying(|client| self.try_deregister(client, lease))
            .await
    }

    async fn try_deregister(
        &self,
        mut client: Client,
        lease: Option<i64>,
    ) -> Result<(), msa_core::etcd::EtcdError> {
        match lease {
            Some(lease) => {
                client.lease_revoke(lease).await?;
            }
            None => {
                client.delete(self.key.as_str(), None).await?;
            }
        }
        tracing::info!(key = %self.key, "deregistered from etcd");
        Ok(())
    }

    /// Registers, keeps the lease alive, registers again with a new lease when the old
    /// one is lost, and deregisters in `shutdown`'s before-drain phase. Failures are
    /// logged and retried; they never stop the service.
    pub fn start(self, shutdown: &Shutdown) -> EtcdRegistration {
        let this = self.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let stop = stopping.triggered();
            tokio::pin!(stop);
            tokio::select! {
                () = &mut stop => {}
                () = this.keep() => {}
            }
        });
        let leaving = self.clone();
        shutdown.before_drain("deregister", move || async move {
            if let Err(error) = leaving.deregister().await {
                tracing::warn!(%error, "deregistration failed; the lease will expire");
            }
        });
        self
    }

    /// Registers and renews, forever.
    async fn keep(&self) {
        let every = self.lease / 3;
        let mut backoff = Backoff::new(Duration::from_millis(100), every);
        loop {
            let lease = match self.register().await {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::warn!(key = %self.key, %error, "registration in etcd failed; retrying");
                    self.registered.send_replace(None);
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            let lost = match self.client.get().await {
                Ok(client) => msa_core::etcd::keep_alive(client, lease, self.lease).await,
                Err(error) => error.to_string(),
            };
            tracing::warn!(key = %self.key, reason = %lost, "lease lost; registering again");
            self.registered.send_replace(None);
        }
    }
}
