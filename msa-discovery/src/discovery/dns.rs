use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use msa_core::ServiceInstance;
use tokio::sync::watch;

use super::{Discovery, Instances, Watches};

/// Which DNS records list a service's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsQuery {
    /// A and AAAA records of `name`, each address an instance on `port`: a Kubernetes
    /// headless service (`orders.shop.svc.cluster.local`).
    Address {
        /// The name to resolve.
        name: String,
        /// The port every instance listens on.
        port: u16,
    },
    /// SRV records of `name` (`_http._tcp.orders.shop.svc.cluster.local`): each record an
    /// instance at its target and port, with its weight. Only the records of the best
    /// (lowest) priority are used, as RFC 2782 says.
    Srv {
        /// The name to resolve.
        name: String,
    },
}

impl DnsQuery {
    /// A and AAAA records of `name`, instances on `port`.
    pub fn address(name: impl Into<String>, port: u16) -> Self {
        DnsQuery::Address {
            name: name.into(),
            port,
        }
    }

    /// SRV records of `name`.
    pub fn srv(name: impl Into<String>) -> Self {
        DnsQuery::Srv { name: name.into() }
    }

    fn name(&self) -> &str {
        match self {
            DnsQuery::Address { name, .. } | DnsQuery::Srv { name } => name,
        }
    }
}

/// Instances from DNS, resolved with hickory-resolver, and again every interval (default
/// 5 s), so a scaled deployment shows within it. A name with no records is a service with
/// no instances; a DNS failure keeps the last known list.
///
/// # Examples
///
/// ```no_run
/// use msa_discovery::discovery::{Discovery, DnsDiscovery, DnsQuery};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dns = DnsDiscovery::system()?
///     .service("orders", DnsQuery::address("orders.shop.svc.cluster.local", 8080))
///     .service("payments", DnsQuery::srv("_http._tcp.payments.shop.svc.cluster.local"));
/// let orders = dns.watch("orders");
/// # let _ = orders; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    resolver: TokioResolver,
    queries: BTreeMap<String, DnsQuery>,
    interval: Duration,
    services: Watches,
}

impl DnsDiscovery {
    /// Discovery with the system's resolver configuration (`/etc/resolv.conf`).
    pub fn system() -> Result<Self, hickory_resolver::net::NetError> {
        Ok(Self::with_resolver(
            TokioResolver::builder_tokio()?.build()?,
        ))
    }

    /// Discovery through the name servers at `servers` (UDP, then TCP for long answers),
    /// instead of the system's.
    pub fn with_nameservers(
        servers: &[std::net::SocketAddr],
    ) -> Result<Self, hickory_resolver::net::NetError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let servers = servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        let resolver = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .build()?;
        Ok(Self::with_resolver(resolver))
    }

    /// Discovery through this resolver.
    pub fn with_resolver(resolver: TokioResolver) -> Self {
        DnsDiscovery {
            inner: Arc::new(Inner {
                resolver,
                queries: BTreeMap::new(),
                interval: Duration::from_secs(5),
                services: Watches::default(),
            }),
        }
    }

    /// Lists `service`'s instances by `query`. Configure every service before the first
    /// [`watch`](Discovery::watch); a service not configured has no instances.
    pub fn service(mut self, service: &str, query: DnsQuery) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.queries.insert(service.to_ascii_lowercase(), query);
        }
        self
    }

    /// How often names are resolved again (default 5 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.interval = interval.max(Duration::from_millis(10));
        }
        self
    }
}

impl Discovery for DnsDiscovery {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        self.inner.services.watch(service, |service, sender| {
            if let Some(query) = self.inner.queries.get(&service) {
                tokio::spawn(follow(
                    Arc::downgrade(&self.inner),
                    service,
                    query.clone(),
                    sender,
                ));
            }
        })
    }
}

async fn follow(
    inner: Weak<Inner>,
    service: String,
    query: DnsQuery,
    sender: watch::Sender<Instances>,
) {
    let mut failing = false;
    loop {
        let Some(live) = inner.upgrade() else { return };
        match resolve(&live.resolver, &service, &query).await {
            Ok(instances) => {
                failing = false;
                sender.send_if_modified(|current| {
                    if current[..] == instances[..] {
                        return false;
                    }
                    *current = instances.into();
                    true
                });
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%service, name = query.name(), %error,
                        "DNS lookup failed; keeping the last known instances");
                    failing = true;
                }
            }
        }
        let interval = live.interval;
        drop(live);
        tokio::time::sleep(interval).await;
    }
}

async fn resolve(
    resolver: &TokioResolver,
    service: &str,
    query: &DnsQuery,
) -> Result<Vec<ServiceInstance>, hickory_resolver::net::NetError> {
    let found = match query {
        DnsQuery::Address { name, port } => resolver.lookup_ip(name.as_str()).await.map(|ips| {
            let mut instances: Vec<ServiceInstance> = ips
                .iter()
                .map(|ip| ServiceInstance::new(service, ip.to_string(), *port))
                .collect();
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            instances
        }),
        DnsQuery::Srv { name } => resolver.srv_lookup(name.as_str()).await.map(|lookup| {
            let records: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) if !srv.target.is_root() => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            let best = records.iter().map(|srv| srv.priority).min();
            let mut instances: Vec<ServiceInstance> = records
                .iter()
                .filter(|srv| Some(srv.priority) == best)
                .map(|srv| {
                    let host = srv.target.to_utf8();
                    let host = host.trim_end_matches('.');
                    ServiceInstance::new(service, host, srv.port)
                        .with_weight(u32::from(srv.weight.max(1)))
                })
                .collect();
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            instances
        }),
    };
    match found {
        Err(error) if error.is_no_records_found() => Ok(Vec::new()),
        other => other,
    }
}
