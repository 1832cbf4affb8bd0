//! Where a service's instances come from: the [`Discovery`] trait and its backends.
//!
//! A backend hands out, per service, a `tokio::sync::watch` receiver of its instances:
//! the current list is one `borrow()` away, and changes arrive without polling. Lists hold
//! every known instance whatever its status; choosing only `UP` ones is the load
//! balancer's job. When a backend's source is unreachable, the last known list stays.
//!
//! - [`StaticDiscovery`]: instances from configuration.
//! - [`RegistryDiscovery`]: follows msa-registry's native watch.
//! - [`EurekaDiscovery`]: polls any Eureka server's delta, as Eureka's own client does.
//! - `DnsDiscovery` (feature `dns`): A/AAAA or SRV records, for Kubernetes headless
//!   services.
//!
//! A new backend (etcd, Consul) implements [`Discovery::watch`]: keep one
//! `watch::Sender` per service and send each new list.

#[cfg(feature = "dns")]
mod dns;
mod eureka;
mod registry;

#[cfg(feature = "dns")]
pub use self::dns::{DnsDiscovery, DnsQuery};
pub use self::eureka::EurekaDiscovery;
pub use self::registry::RegistryDiscovery;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use msa_core::ServiceInstance;
use tokio::sync::watch;

/// A service's instances at one moment.
pub type Instances = Arc<[ServiceInstance]>;

/// Every service's instances at one moment, by service name (lower case): what a
/// dashboard follows ([`RegistryDiscovery::catalog`], [`EurekaDiscovery::catalog`]).
pub type Catalog = Arc<BTreeMap<String, Instances>>;

/// A source of service instances.
pub trait Discovery: fmt::Debug + Send + Sync + 'static {
    /// The instances of `service`, now and as they change. Service names are
    /// case-insensitive.
    fn watch(&self, service: &str) -> watch::Receiver<Instances>;

    /// The instances of `service` now.
    fn instances(&self, service: &str) -> Instances {
        self.watch(service).borrow().clone()
    }

    /// Whether `service` is a service this backend knows, when it can tell without
    /// asking its source (a static list can); `None` otherwise, and then the balancer
    /// waits for the backend's first answer about it.
    fn knows(&self, service: &str) -> Option<bool> {
        let _ = service;
        None
    }
}

/// The per-service senders of a backend that follows each service on a task of its own.
#[derive(Debug, Default)]
pub(crate) struct Watches(Mutex<BTreeMap<String, watch::Sender<Instances>>>);

impl Watches {
    /// A receiver of `service`'s instances (names are lower-cased). The first time a
    /// service is asked for, `start` gets its name and sender, to follow it.
    pub(crate) fn watch(
        &self,
        service: &str,
        start: impl FnOnce(String, watch::Sender<Instances>),
    ) -> watch::Receiver<Instances> {
        let service = service.to_ascii_lowercase();
        let mut services = msa_core::sync::lock(&self.0);
        if let Some(sender) = services.get(&service) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Instances::from(Vec::new()));
        services.insert(service.clone(), sender.clone());
        drop(services);
        start(service, sender);
        receiver
    }
}

/// Instances from configuration; they never change.
///
/// # Examples
///
/// ```
/// use msa_core::ServiceInstance;
/// use msa_discovery::discovery::{Discovery, StaticDiscovery};
///
/// let discovery = StaticDiscovery::new([ServiceInstance::new("orders", "10.0.0.7", 8081)]);
/// assert_eq!(discovery.instances("ORDERS").len(), 1);
/// assert!(discovery.instances("payments").is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    services: Arc<BTreeMap<String, watch::Sender<Instances>>>,
}

impl StaticDiscovery {
    /// These instances, grouped by service.
    pub fn new(instances: impl IntoIterator<Item = ServiceInstance>) -> Self {
        let mut grouped: BTreeMap<String, Vec<ServiceInstance>> = BTreeMap::new();
        for instance in instances {
            grouped
                .entry(instance.service.to_ascii_lowercase())
                .or_default()
                .push(instance);
        }
        StaticDiscovery {
            services: Arc::new(
                grouped
                    .into_iter()
                    .map(|(name, list)| (name, watch::Sender::new(list.into())))
                    .collect(),
            ),
        }
    }
}

impl Discovery for StaticDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        match self.services.get(&service.to_ascii_lowercase()) {
            Some(sender) => sender.subscribe(),
            None => watch::Sender::new(Instances::from(Vec::new())).subscribe(),
        }
    }

    fn knows(&self, service: &str) -> Option<bool> {
        Some(self.services.contains_key(&service.to_ascii_lowercase()))
    }
}
