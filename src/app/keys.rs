//! The keys `App` reads: msa's own (`msa.*`, checked strictly: a typo fails naming file,
//! line and key) and Spring's (read where msa implements them, and otherwise reported in
//! one warning).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use msa_core::settings::{Origin, Settings, SettingsError};
use msa_core::tls::ClientTls;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Everything under `msa`; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Msa {
    pub(crate) profiles: Profiles,
    pub(crate) config: ConfigKeys,
    pub(crate) discovery: DiscoveryKeys,
    /// Read as `BalancerConfig` by the discovery part (strictly too).
    pub(crate) loadbalancer: Option<IgnoredAny>,
    pub(crate) client: ClientKeys,
    pub(crate) server: ServerKeys,
    pub(crate) management: ManagementKeys,
    pub(crate) security: SecurityKeys,
    /// Read as msa-stream's `StreamSettings` (strictly too) when the app has a stream.
    pub(crate) stream: Option<IgnoredAny>,
    /// Read as `msa.events` (strictly too) when the app uses msa-events.
    pub(crate) events: Option<IgnoredAny>,
}

/// `msa.security`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SecurityKeys {
    pub(crate) jwt: JwtKeys,
}

/// `msa.security.jwt`: what Spring's resource server keys do not cover.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct JwtKeys {
    /// An HS256 secret (tests, and estates that share one).
    pub(crate) hs256_secret: Option<String>,
    /// The issuer tokens must come from, when the keys come from elsewhere.
    pub(crate) issuer: Option<String>,
    /// How far clocks may disagree (default 60 s).
    #[serde(with = "msa_core::duration::option")]
    pub(crate) leeway: Option<Duration>,
}

/// `msa.profiles`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Profiles {
    pub(crate) active: Vec<String>,
}

/// `msa.config`: the config server (Spring: `spring.cloud.config.*`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ConfigKeys {
    pub(crate) enabled: Option<bool>,
    pub(crate) uri: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) fail_fast: Option<bool>,
    pub(crate) cache_file: Option<PathBuf>,
}

/// `msa.discovery`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct DiscoveryKeys {
    #[serde(rename = "type")]
    pub(crate) kind: Option<DiscoveryKind>,
    pub(crate) dns: DnsKeys,
    pub(crate) etcd: EtcdKeys,
}

/// `msa.discovery.etcd`: discovery and registration straight on etcd.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct EtcdKeys {
    /// `etcd://host:port[,host:port...]`.
    pub(crate) endpoints: Option<String>,
    /// The key prefix (`/msa`).
    pub(crate) prefix: Option<String>,
    /// The registration's lease (30 s; renewed every third of it).
    #[serde(with = "msa_core::duration::option")]
    pub(crate) lease: Option<Duration>,
    /// Whether the app registers itself (true).
    pub(crate) register: Option<bool>,
}

/// Where instances come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DiscoveryKind {
    /// msa-registry's watch (and a Eureka server's delta when it has no watch).
    Registry,
    /// A Eureka server's REST API with delta fetches.
    Eureka,
    /// DNS A/AAAA or SRV records.
    Dns,
    /// `spring.cloud.discovery.client.simple.instances`.
    Static,
    /// etcd's keys, watched (`msa.discovery.etcd`).
    Etcd,
    /// No discovery.
    None,
}

/// `msa.discovery.dns`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct DnsKeys {
    /// `host:port` of name servers (default: the system's).
    pub(crate) nameservers: Vec<String>,
    #[serde(with = "msa_core::duration::option")]
    pub(crate) interval: Option<Duration>,
    /// Service → `name:port` (A/AAAA) or `_http._tcp.name` (SRV).
    pub(crate) services: BTreeMap<String, String>,
}

/// `msa.client`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ClientKeys {
    pub(crate) ssl: Option<ClientTls>,
    #[serde(with = "msa_core::duration::option")]
    pub(crate) timeout: Option<Duration>,
}

/// `msa.server`: the listeners' limits.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ServerKeys {
    #[serde(with = "msa_core::duration::option")]
    pub(crate) header_read_timeout: Option<Duration>,
    #[serde(with = "msa_core::duration::option")]
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    #[serde(with = "msa_core::duration::option")]
    pub(crate) shutdown_grace: Option<Duration>,
}

/// `msa.management`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ManagementKeys {
    /// The management token (`MSA_MANAGEMENT_TOKEN`).
    pub(crate) token: Option<String>,
}

/// The Spring keys msa implements, by prefix: a key under one of [`SPRING_ROOTS`] that no
/// entry here covers is reported as not implemented.
const IMPLEMENTED: &[&str] = &[
    "spring.application.name",
    "spring.profiles.active",
    "spring.config.import",
    "spring.config.activate.on-profile",
    "spring.cloud.config.uri",
    "spring.cloud.config.label",
    "spring.cloud.config.profile",
    "spring.cloud.config.name",
    "spring.cloud.config.username",
    "spring.cloud.config.password",
    "spring.cloud.config.fail-fast",
    "spring.cloud.config.enabled",
    "spring.cloud.config.retry",
    "spring.cloud.discovery.client.simple.instances",
    "spring.cloud.inetutils.preferred-networks",
    "spring.cloud.inetutils.ignored-interfaces",
    "server.address",
    "server.port",
    "server.ssl.enabled",
    "server.ssl.certificate",
    "server.ssl.certificate-private-key",
    "server.ssl.trust-certificate",
    "server.ssl.client-auth",
    "management.server.port",
    "management.server.address",
    "eureka.client.service-url",
    "eureka.client.enabled",
    "eureka.client.register-with-eureka",
    "eureka.client.fetch-registry",
    "eureka.client.registry-fetch-interval-seconds",
    "eureka.instance.hostname",
    "eureka.instance.prefer-ip-address",
    "eureka.instance.ip-address",
    "eureka.instance.instance-id",
    "eureka.instance.lease-renewal-interval-in-seconds",
    "eureka.instance.lease-expiration-duration-in-seconds",
    "eureka.instance.metadata-map",
    "logging.level",
    "spring.cloud.stream.bindings",
    "spring.cloud.stream.instance-index",
    "spring.cloud.stream.instance-count",
    "spring.cloud.stream.default-binder",
    "spring.cloud.stream.binders",
    "spring.cloud.bus.enabled",
    "spring.cloud.bus.id",
    // Where the `rabbit` binder connects when its entry has no `url`.
    "spring.rabbitmq.addresses",
    "spring.rabbitmq.host",
    "spring.rabbitmq.port",
    "spring.rabbitmq.username",
    "spring.rabbitmq.password",
    "spring.rabbitmq.virtual-host",
    // The service's database, for msa-events.
    "spring.datasource.url",
    "spring.datasource.username",
    "spring.datasource.password",
    "spring.security.oauth2.resourceserver.jwt.issuer-uri",
    "spring.security.oauth2.resourceserver.jwt.jwk-set-uri",
    "spring.security.oauth2.resourceserver.jwt.audiences",
    "spring.security.oauth2.resourceserver.jwt.public-key-location",
    // Read by msa-breaker's sections, which warn about what they do not implement.
    "resilience4j",
];

/// Spring keys msa implements as they are, not with what is below them (Spring's older
/// on-profile key; `spring.profiles.include` is not implemented).
const IMPLEMENTED_EXACTLY: &[&str] = &["spring.profiles"];

/// The roots under which unknown keys are Spring's (reported), not the application's own.
const SPRING_ROOTS: &[&str] = &["spring", "server", "management", "eureka", "logging"];

/// Checks `msa.*` strictly, and logs one warning naming every Spring key set (in files,
/// by a config server or in code) that msa does not implement.
pub(crate) fn check(settings: &Settings) -> Result<Msa, SettingsError> {
    let msa: Msa = settings.bind("msa")?;
    let unimplemented = unimplemented(settings);
    if !unimplemented.is_empty() {
        let keys: Vec<String> = unimplemented
            .iter()
            .map(|(key, origin)| format!("{key} ({origin})"))
            .collect();
        tracing::warn!(
            keys = %keys.join(", "),
            "Spring settings msa does not implement: ignored"
        );
    }
    Ok(msa)
}

/// The Spring keys set that msa does not implement, with where each was set.
pub(crate) fn unimplemented(settings: &Settings) -> Vec<(String, Origin)> {
    let subtrees: Vec<String> = IMPLEMENTED.iter().map(|k| relaxed(k)).collect();
    let exact: Vec<String> = IMPLEMENTED_EXACTLY.iter().map(|k| relaxed(k)).collect();
    let covered = |key: &str| {
        let key = relaxed(key);
        exact.contains(&key)
            || subtrees.iter().any(|prefix| {
                key.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
    };
    SPRING_ROOTS
        .iter()
        .flat_map(|root| settings.keys(root))
        .filter(|(key, _)| !covered(key))
        .collect()
}

/// A key compared as Spring compares them: case, dashes and underscores ignored.
fn relaxed(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_keys_msa_does_not_implement_are_listed_and_msa_typos_fail() {
        let mut settings = Settings::new();
        settings
            .add_yaml(
                "application.yml",
                "spring:\n  application:\n    name: orders\n  profiles:\n    include: extra\n  jpa:\n    open-in-view: false\nserver:\n  port: 8081\n  compression:\n    enabled: true\neureka:\n  client:\n    serviceUrl:\n      defaultZone: http://h/eureka/\norders:\n  max: 1\nmsa:\n  discovery:\n    type: eureka\n",
            )
            .unwrap();
        let keys: Vec<String> = unimplemented(&settings)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // `spring.profiles.include` is not `spring.profiles` (the older on-profile key).
        assert_eq!(
            keys,
            [
                "spring.profiles.include",
                "spring.jpa.open-in-view",
                "server.compression.enabled"
            ]
        );
        let msa = check(&settings).unwrap();
        assert_eq!(msa.discovery.kind, Some(DiscoveryKind::Eureka));

        settings
            .add_yaml("application-dev.yml", "msa:\n  discovery:\n    typ: dns\n")
            .unwrap();
        let error = check(&settings).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("application-dev.yml:3: msa.discovery.typ: unknown field"),
            "{error}"
        );
    }
}
