//! Discovery and registration from settings: which backend, which registry URLs, and what
//! the instance registers as.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use msa_core::settings::Settings;
use msa_core::shutdown::Shutdown;
use msa_core::{Scheme, ServiceInstance};
use msa_discovery::discovery::{
    Discovery, EurekaDiscovery, Instances, RegistryDiscovery, StaticDiscovery,
};
#[cfg(feature = "dns")]
use msa_discovery::discovery::{DnsDiscovery, DnsQuery};
use msa_discovery::registration::Registration;
use msa_discovery::service_url::ServiceUrls;
use serde::Deserialize;
use tokio::sync::watch;

use super::Error;
use super::address::{self, Choice};
use super::keys::{DiscoveryKind, Msa};

/// A backend chosen at run time, as one [`Discovery`].
#[derive(Clone, Debug)]
pub(crate) struct Shared(pub(crate) Arc<dyn Discovery>);

impl Discovery for Shared {
    fn watch(&self, service: &str) -> watch::Receiver<Instances> {
        self.0.watch(service)
    }

    fn knows(&self, service: &str) -> Option<bool> {
        self.0.knows(service)
    }
}

/// The registry URLs of `eureka.client.service-url` (`defaultZone`, else the first zone's).
pub(crate) fn service_urls(settings: &Settings) -> Result<Option<ServiceUrls>, Error> {
    let zones: BTreeMap<String, String> = settings
        .bind("eureka.client.service-url")
        .map_err(Error::Settings)?;
    let list = zones
        .iter()
        .find(|(zone, _)| zone.eq_ignore_ascii_case("defaultZone") || zone == &"default-zone")
        .or_else(|| zones.iter().next())
        .map(|(_, list)| list.clone());
    match list {
        None => Ok(None),
        Some(list) => ServiceUrls::parse(&list)
            .map(Some)
            .map_err(|e| Error::Discovery(format!("eureka.client.service-url.defaultZone: {e}"))),
    }
}

fn flag(settings: &Settings, key: &str, default: bool) -> Result<bool, Error> {
    Ok(settings
        .bind::<Option<bool>>(key)
        .map_err(Error::Settings)?
        .unwrap_or(default))
}

/// The backend the settings choose (`msa.discovery.type`; by default the registry when
/// `eureka.client.service-url` is set, else a static list when Spring's simple instances
/// are, else none).
pub(crate) fn backend(
    settings: &Settings,
    msa: &Msa,
    http: reqwest::Client,
) -> Result<Option<Shared>, Error> {
    let urls = service_urls(settings)?;
    let eureka_on = flag(settings, "eureka.client.enabled", true)?
        && flag(settings, "eureka.client.fetch-registry", true)?;
    let simple = "spring.cloud.discovery.client.simple.instances";
    let kind = match msa.discovery.kind {
        Some(kind) => kind,
        None if urls.is_some() && eureka_on => DiscoveryKind::Registry,
        None if settings.contains(simple) => DiscoveryKind::Static,
        None if !msa.discovery.dns.services.is_empty() => DiscoveryKind::Dns,
        None => DiscoveryKind::None,
    };
    let needs_urls = || {
        urls.clone().ok_or_else(|| {
            Error::Discovery(
                "msa.discovery.type needs eureka.client.service-url.defaultZone".into(),
            )
        })
    };
    let backend: Arc<dyn Discovery> = match kind {
        DiscoveryKind::None => return Ok(None),
        DiscoveryKind::Registry => Arc::new(RegistryDiscovery::with_client(needs_urls()?, http)),
        DiscoveryKind::Eureka => {
            let mut eureka = EurekaDiscovery::with_client(needs_urls()?, http);
            let seconds: Option<u64> = settings
                .bind("eureka.client.registry-fetch-interval-seconds")
                .map_err(Error::Settings)?;
            if let Some(seconds) = seconds {
                eureka = eureka.interval(Duration::from_secs(seconds));
            }
            Arc::new(eureka)
        }
        DiscoveryKind::Static => Arc::new(static_instances(settings, simple)?),
        #[cfg(feature = "etcd")]
        DiscoveryKind::Etcd => {
            let keys = &msa.discovery.etcd;
            Arc::new(msa_discovery::etcd::EtcdDiscovery::with_prefix(
                etcd_client(keys)?,
                keys.prefix
                    .as_deref()
                    .unwrap_or(msa_discovery::etcd::PREFIX),
            ))
        }
        #[cfg(not(feature = "etcd"))]
        DiscoveryKind::Etcd => {
            return Err(Error::Discovery(
                "msa.discovery.type: etcd needs msa's `etcd` feature".into(),
            ));
        }
        #[cfg(feature = "dns")]
        DiscoveryKind::Dns => Arc::new(dns(msa)?),
        #[cfg(not(feature = "dns"))]
        DiscoveryKind::Dns => {
            return Err(Error::Discovery(
                "msa.discovery.type: dns needs msa's `dns` feature".into(),
            ));
        }
    };
    Ok(Some(Shared(backend)))
}

/// The etcd client of `msa.discovery.etcd.endpoints`, connected on first use.
#[cfg(feature = "etcd")]
fn etcd_client(keys: &super::keys::EtcdKeys) -> Result<msa_core::etcd::LazyClient, Error> {
    let endpoints = keys.endpoints.as_deref().ok_or_else(|| {
        Error::Discovery("msa.discovery.type: etcd needs msa.discovery.etcd.endpoints".into())
    })?;
    msa_core::etcd::LazyClient::new(endpoints)
        .map_err(|e| Error::Discovery(format!("msa.discovery.etcd.endpoints: {e}")))
}

/// Spring Cloud's `SimpleDiscoveryClient` instances.
fn static_instances(settings: &Settings, key: &str) -> Result<StaticDiscovery, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Simple {
        uri: String,
        #[serde(default)]
        instance_id: Option<String>,
        #[serde(default)]
        metadata: BTreeMap<String, String>,
    }
    let services: BTreeMap<String, Vec<Simple>> = settings.bind(key).map_err(Error::Settings)?;
    let mut instances = Vec::new();
    for (service, list) in services {
        for (i, simple) in list.into_iter().enumerate() {
            let bad = |reason: &str| {
                Error::Discovery(format!(
                    "{key}.{service}[{i}].uri {:?}: {reason}",
                    msa_core::secrets::mask_url(&simple.uri)
                ))
            };
            let uri: http::Uri = simple.uri.parse().map_err(|_| bad("not a URI"))?;
            let scheme = match uri.scheme_str() {
                Some("http") => Scheme::Http,
                Some("https") => Scheme::Https,
                _ => return Err(bad("must start with http:// or https://")),
            };
            let host = uri.host().ok_or_else(|| bad("has no host"))?;
            let port = uri.port_u16().unwrap_or(match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            });
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let mut instance =
                ServiceInstance::new(service.clone(), host, port).with_scheme(scheme);
            if let Some(id) = &simple.instance_id {
                instance = instance.with_id(id.clone());
            }
            if let Some(zone) = simple.metadata.get("zone") {
                instance = instance.with_zone(zone.clone());
            }
            for (k, v) in &simple.metadata {
                instance = instance.with_metadata(k.clone(), v.clone());
            }
            instances.push(instance);
        }
    }
    Ok(StaticDiscovery::new(instances))
}

/// DNS discovery from `msa.discovery.dns`.
#[cfg(feature = "dns")]
fn dns(msa: &Msa) -> Result<DnsDiscovery, Error> {
    let keys = &msa.discovery.dns;
    let mut dns = if keys.nameservers.is_empty() {
        DnsDiscovery::system()
            .map_err(|e| Error::Discovery(format!("the system's DNS configuration: {e}")))?
    } else {
        let servers = keys
            .nameservers
            .iter()
            .map(|server| {
                server
                    .parse::<SocketAddr>()
                    .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        Error::Discovery(format!(
                            "msa.discovery.dns.nameservers: {server:?} is not an address (ip or ip:port)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        DnsDiscovery::with_nameservers(&servers)
            .map_err(|e| Error::Discovery(format!("msa.discovery.dns.nameservers: {e}")))?
    };
    for (service, name) in &keys.services {
        let query = if name.starts_with('_') {
            DnsQuery::srv(name.clone())
        } else {
            let (host, port) = name
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    Error::Discovery(format!(
                        "msa.discovery.dns.services.{service}: {name:?} is neither `name:port` (A/AAAA records) nor `_service._proto.name` (SRV)"
                    ))
                })?;
            DnsQuery::address(host, port)
        };
        dns = dns.service(service, query);
    }
    if let Some(interval) = keys.interval {
        dns = dns.interval(interval);
    }
    Ok(dns)
}

/// What an instance registers as; see [`register`].
#[derive(Debug)]
pub(crate) struct Registered<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: Option<&'a str>,
    pub(crate) addr: SocketAddr,
    pub(crate) management_port: Option<u16>,
    pub(crate) tls: bool,
    /// Renewal and lease set in code (they win over the keys).
    pub(crate) lease: Option<(Duration, Duration)>,
}

/// Eureka's instance settings (`eureka.instance.*`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct InstanceKeys {
    hostname: Option<String>,
    prefer_ip_address: bool,
    ip_address: Option<String>,
    instance_id: Option<String>,
    lease_renewal_interval_in_seconds: Option<u64>,
    lease_expiration_duration_in_seconds: Option<u64>,
    metadata_map: BTreeMap<String, String>,
}

/// `spring.cloud.inetutils.*`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct InetUtils {
    preferred_networks: Vec<String>,
    ignored_interfaces: Vec<String>,
}

/// The host others reach the app at: `eureka.instance.hostname`; with
/// `prefer-ip-address`, `eureka.instance.ip-address`; else the bound address, or when
/// bound to all interfaces the first non-loopback interface address (Spring's
/// `InetUtils`).
pub(crate) fn advertised_host(settings: &Settings, bound: IpAddr) -> Result<String, Error> {
    let keys: InstanceKeys = settings.bind("eureka.instance").map_err(Error::Settings)?;
    let detected = || -> Result<String, Error> {
        if !bound.is_unspecified() {
            return Ok(bound.to_string());
        }
        let inet: InetUtils = settings
            .bind("spring.cloud.inetutils")
            .map_err(Error::Settings)?;
        let choice = Choice {
            preferred_networks: inet.preferred_networks,
            ignored_interfaces: inet.ignored_interfaces,
        };
        Ok(address::first_non_loopback(&address::interfaces(), &choice)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
            .to_string())
    };
    if keys.prefer_ip_address {
        return match keys.ip_address {
            Some(ip) => Ok(ip),
            None => detected(),
        };
    }
    match keys.hostname {
        Some(host) => Ok(host),
        None => detected(),
    }
}

/// The zone the instance is in (`eureka.instance.metadata-map.zone`).
pub(crate) fn own_zone(settings: &Settings) -> Option<String> {
    settings.get_string("eureka.instance.metadata-map.zone")
}

/// Registers the instance with the registries of `eureka.client.service-url` (unless
/// `eureka.client.register-with-eureka` or `eureka.client.enabled` is false).
pub(crate) fn register(
    settings: &Settings,
    registered: Registered<'_>,
    http: reqwest::Client,
    shutdown: &Shutdown,
) -> Result<Option<Registration>, Error> {
    let discovery: super::keys::DiscoveryKeys =
        settings.bind("msa.discovery").map_err(Error::Settings)?;
    if discovery.kind == Some(DiscoveryKind::Etcd) {
        register_in_etcd(settings, &discovery.etcd, &registered, shutdown)?;
        return Ok(None);
    }
    let Some(urls) = service_urls(settings)? else {
        return Ok(None);
    };
    if !flag(settings, "eureka.client.enabled", true)?
        || !flag(settings, "eureka.client.register-with-eureka", true)?
    {
        return Ok(None);
    }
    let (instance, from_keys) = instance(settings, &registered)?;
    let mut registration = Registration::with_urls(urls, instance).http_client(http);
    let lease = registered.lease.or(from_keys);
    if let Some((renewal, lease)) = lease {
        registration = registration.timings(renewal, lease);
    }
    Ok(Some(registration.start(shutdown)))
}

/// Registers the instance straight in etcd (`msa.discovery.type: etcd`), unless
/// `msa.discovery.etcd.register` is false.
#[cfg(feature = "etcd")]
fn register_in_etcd(
    settings: &Settings,
    keys: &super::keys::EtcdKeys,
    registered: &Registered<'_>,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    if keys.register == Some(false) {
        return Ok(());
    }
    let (instance, from_keys) = instance(settings, registered)?;
    let lease = keys
        .lease
        .or(registered.lease.or(from_keys).map(|(_, lease)| lease))
        .unwrap_or(Duration::from_secs(30));
    msa_discovery::etcd::EtcdRegistration::with_prefix(
        etcd_client(keys)?,
        instance,
        keys.prefix
            .as_deref()
            .unwrap_or(msa_discovery::etcd::PREFIX),
    )
    .lease(lease)
    .start(shutdown);
    Ok(())
}

#[cfg(not(feature = "etcd"))]
fn register_in_etcd(
    _: &Settings,
    _: &super::keys::EtcdKeys,
    _: &Registered<'_>,
    _: &Shutdown,
) -> Result<(), Error> {
    Err(Error::Discovery(
        "msa.discovery.type: etcd needs msa's `etcd` feature".into(),
    ))
}

/// The instance as it registers, and the renewal and lease of `eureka.instance.*`.
#[allow(clippy::type_complexity)]
fn instance(
    settings: &Settings,
    registered: &Registered<'_>,
) -> Result<(ServiceInstance, Option<(Duration, Duration)>), Error> {
    let keys: InstanceKeys = settings.bind("eureka.instance").map_err(Error::Settings)?;
    let host = advertised_host(settings, registered.addr.ip())?;
    let mut instance = ServiceInstance::new(registered.name, host, registered.addr.port());
    if registered.tls {
        instance = instance.with_scheme(Scheme::Https);
    }
    if let Some(id) = &keys.instance_id {
        instance = instance.with_id(id.clone());
    }
    for (key, value) in &keys.metadata_map {
        instance = instance.with_metadata(key.clone(), value.clone());
    }
    if let Some(zone) = keys.metadata_map.get("zone") {
        instance = instance.with_zone(zone.clone());
    }
    if let Some(version) = registered.version {
        instance = instance.with_metadata("version", version);
    }
    if let Some(port) = registered.management_port {
        // Spring Cloud's key, which Spring Boot Admin and Prometheus' Eureka discovery
        // read to find the actuator.
        instance = instance.with_metadata("management.port", port.to_string());
    }
    let from_keys = match (
        keys.lease_renewal_interval_in_seconds,
        keys.lease_expiration_duration_in_seconds,
    ) {
        (None, None) => None,
        (renewal, lease) => {
            // msa's defaults: renew every 10 s, a lease of three renewals.
            let renewal = renewal.unwrap_or(10).max(1);
            let lease = lease.unwrap_or(3 * renewal);
            Some((Duration::from_secs(renewal), Duration::from_secs(lease)))
        }
    };
    Ok((instance, from_keys))
}
