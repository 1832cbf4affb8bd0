//! The gateway's configuration file: routes in Spring Cloud Gateway's vocabulary.
//!
//! ```yaml
//! server:
//!   bind: 127.0.0.1:8080
//! discovery:
//!   registry: http://127.0.0.1:8761
//! routes:
//!   - id: orders
//!     uri: lb://orders
//!     predicates:
//!       - Path=/api/orders/**
//!     filters:
//!       - StripPrefix=1
//!     metadata: { connect-timeout: 200, response-timeout: 2000 }
//! default-filters:
//!   - AddResponseHeader=X-Gateway, msa
//! ```
//!
//! A Spring Cloud Gateway `application.yml` reads unchanged: the routes under
//! `spring.cloud.gateway.server.webflux` (4.x) or `spring.cloud.gateway` (3.x), Spring
//! Boot's `server.port`, the gateway's `httpclient` timeouts and `resilience4j.*`;
//! Spring keys msa does not implement are [warnings](GatewayConfig::warnings).
//! Every mistake is reported as one [`ConfigError`] naming the file, the line and the key.

mod definition;
mod spring;

pub(crate) use self::definition::masked_map;
pub use self::definition::{Args, Definition, MASK, mask_url};

use std::fmt;
use std::net::SocketAddr;

use msa_core::yaml;
use std::path::Path;
use std::time::Duration;

use msa_core::ServiceInstance;
use msa_discovery::balance::BalancerConfig;
use serde::Deserialize;
use serde_json::Value;

/// The whole file.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The listener and limits.
    pub server: ServerConfig,
    /// Where `lb://` names are resolved.
    pub discovery: DiscoveryConfig,
    /// The routes, in file order (matching orders them by `order`, then file order).
    pub routes: Vec<RouteDefinition>,
    /// Filters applied to every route, before the route's own.
    pub default_filters: Vec<Definition>,
    /// The access log (`msa.gateway.access-log`, or Spring's
    /// `reactor.netty.http.server.accessLogEnabled`): off by default. Read at start.
    pub access_log: crate::AccessLogConfig,
    /// Resilience4j's sections the CircuitBreaker and Retry filters read their settings
    /// from, by name.
    pub resilience: ResilienceConfig,
    /// `globalcors` (Spring Cloud Gateway's CORS section), checked when the routes are
    /// built.
    pub(crate) globalcors: Option<Value>,
    /// `spring.ssl.bundle.pem`: the bundles `server.ssl` names.
    pub ssl_bundles: std::collections::BTreeMap<String, PemBundle>,
    /// Spring keys in the file that msa does not implement: accepted, and logged once
    /// each when a [`Gateway`](crate::Gateway) is built or reloaded from the file.
    pub warnings: Vec<ConfigError>,
    /// Where each route's and filter's definition is, for errors found later.
    pub(crate) source: Source,
}

/// The file's `resilience4j` sections, as Resilience4j's Spring Boot properties shape them
/// (`configs.default`, `instances.<name>`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ResilienceConfig {
    /// `resilience4j.circuitbreaker`: a CircuitBreaker filter's breaker is the instance
    /// its `name` argument names.
    pub circuit_breaker: msa_breaker::Section,
    /// `resilience4j.retry`: a Retry filter starts from the instance its `name` argument
    /// names (the route id when it has none); its own arguments say the rest.
    pub retry: msa_breaker::Section,
    /// `resilience4j.timelimiter`: when the file gives a CircuitBreaker's name a
    /// `timeout-duration` (or a default one), its calls are limited by it rather than by
    /// the route's response timeout.
    pub time_limiter: msa_breaker::Section,
}

/// Where the configuration came from, to name file, line and key in errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Source {
    pub(crate) file: String,
    lines: std::sync::Arc<yaml::Document>,
    /// The path prefix of routes and default filters (`spring.cloud.gateway.` or empty).
    prefix: String,
}

impl Source {
    /// An error at `path` (below the gateway section, `routes.0.filters.1`).
    pub(crate) fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        // Spring Boot's `server`, `resilience4j` and `spring.ssl` sit at the top of a
        // Spring file.
        let top =
            path == "server" || path.starts_with("server.") || path.starts_with("resilience4j");
        let key = match path.strip_prefix("ssl-bundles") {
            Some(rest) => format!("spring.ssl.bundle.pem{rest}"),
            None if top => path.to_owned(),
            None => format!("{}{path}", self.prefix),
        };
        ConfigError {
            file: self.file.clone(),
            line: self.lines.line(&key),
            key,
            message: message.into(),
        }
    }
}

/// The `server` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen. Default: `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// The most request header bytes (names and values) accepted on any route; more gets
    /// 431. Default: 32 KiB.
    pub max_header_size: usize,
    /// How long connecting to an upstream may take, unless a route's metadata says.
    /// Default: 2 s.
    #[serde(with = "msa_core::duration")]
    pub connect_timeout: Duration,
    /// How long an upstream may take to answer (to its response headers), unless a
    /// route's metadata says. Default: 60 s.
    #[serde(with = "msa_core::duration")]
    pub response_timeout: Duration,
    /// Worker threads, each with its own listener and connection pool. Default: the
    /// number of cores.
    pub workers: Option<usize>,
    /// Certificates (PEM) that `https://` upstreams may also be signed by, besides the
    /// public web's roots: a private CA. Default: none.
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// The most HTTP/1.1 connections open to one upstream address (shared out among
    /// the workers); requests beyond wait for one to come back, within their response
    /// timeout. Default: 256. Raise it for upstreams that hold requests open (long
    /// polls, server-sent events): each holds a connection for as long as it lasts.
    pub max_connections_per_upstream: usize,
    /// TLS for clients, as Spring Boot's `server.ssl`. Default: off.
    pub ssl: SslConfig,
    /// A client certificate (PEM chain, leaf first) for `https://` upstreams that ask for
    /// one, and its key. Default: none.
    pub upstream_certificate: Option<std::path::PathBuf>,
    /// The key of `upstream-certificate` (PEM).
    pub upstream_certificate_private_key: Option<std::path::PathBuf>,
}

/// `server.ssl`: the gateway terminates TLS (HTTP/2 and HTTP/1.1 through ALPN), with a
/// certificate per server name (SNI), as Spring Boot's PEM settings and SSL bundles say.
/// Edits to the files are applied while running.
///
/// ```yaml
/// server:
///   ssl:
///     certificate: /etc/tls/gateway.crt            # the default: any other name
///     certificate-private-key: /etc/tls/gateway.key
///     server-name-bundles:
///       - { server-name: api.example.com, bundle: api }
/// spring:
///   ssl:
///     bundle:
///       pem:
///         api:
///           keystore: { certificate: /etc/tls/api.crt, private-key: /etc/tls/api.key }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SslConfig {
    /// On when a certificate or bundle is given, unless `false`.
    pub enabled: Option<bool>,
    /// The default certificate chain (PEM, leaf first).
    pub certificate: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub certificate_private_key: Option<std::path::PathBuf>,
    /// The default certificate as a bundle of `spring.ssl.bundle.pem` instead.
    pub bundle: Option<String>,
    /// Certificates by the server name a client asks for (SNI), as bundles.
    pub server_name_bundles: Vec<ServerNameBundle>,
}

impl SslConfig {
    /// Whether the gateway terminates TLS.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(
            self.certificate.is_some()
                || self.bundle.is_some()
                || !self.server_name_bundles.is_empty(),
        )
    }
}

/// A server name and the bundle whose certificate answers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerNameBundle {
    /// The name clients ask for (`api.example.com`, or `*.example.com`).
    pub server_name: String,
    /// The bundle in `spring.ssl.bundle.pem`.
    pub bundle: String,
}

/// A PEM bundle of `spring.ssl.bundle.pem`: its key store (certificate and key).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct PemBundle {
    /// The certificate and its key.
    pub keystore: PemKeystore,
}

/// A bundle's certificate chain and key files.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct PemKeystore {
    /// The certificate chain (PEM, leaf first).
    pub certificate: std::path::PathBuf,
    /// Its private key (PEM).
    pub private_key: std::path::PathBuf,
}

impl ServerConfig {
    /// The worker threads: `workers`, or one per core.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_size: 32 * 1024,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            workers: None,
            upstream_ca_file: None,
            max_connections_per_upstream: 256,
            ssl: SslConfig::default(),
            upstream_certificate: None,
            upstream_certificate_private_key: None,
        }
    }
}

/// The `discovery` section: where `lb://` service names are resolved.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// msa-registry's base URL (`http://127.0.0.1:8761`): its watch API.
    pub registry: Option<String>,
    /// A Eureka server's base URL (`http://eureka:8761/eureka`): delta polling.
    pub eureka: Option<String>,
    /// Fixed instances.
    pub instances: Vec<ServiceInstance>,
    /// The load balancer's settings.
    pub balancer: BalancerConfig,
    /// Routes made from the registered services (Spring Cloud Gateway's
    /// `discovery.locator`).
    pub locator: LocatorConfig,
}

/// `discovery.locator`: a route `/<service>/**` → `lb://<service>` for every service
/// discovery knows, appearing and disappearing with it, as Spring Cloud Gateway's
/// `DiscoveryClientRouteDefinitionLocator` makes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LocatorConfig {
    /// Make the routes. Default: false.
    pub enabled: bool,
    /// Lowercase the service id in the routes (Eureka's ids are uppercase). Default:
    /// false.
    #[serde(alias = "lowerCaseServiceId")]
    pub lower_case_service_id: bool,
    /// Each route's id is this and the service id. Default:
    /// `ReactiveCompositeDiscoveryClient_`, as Spring's.
    #[serde(alias = "routeIdPrefix")]
    pub route_id_prefix: String,
    /// The routes' predicates, as a route's; `serviceId` in an argument written as
    /// Spring's expression (`"'/'+serviceId+'/**'"`) is the service's. Default:
    /// `Path=/<service>/**`.
    pub predicates: Vec<Value>,
    /// The routes' filters, likewise. Default: `RewritePath=/<service>/?(?<remaining>.*),
    /// /${remaining}`.
    pub filters: Vec<Value>,
}

impl Default for LocatorConfig {
    fn default() -> Self {
        LocatorConfig {
            enabled: false,
            lower_case_service_id: false,
            route_id_prefix: "ReactiveCompositeDiscoveryClient_".to_owned(),
            predicates: Vec::new(),
            filters: Vec::new(),
        }
    }
}

/// One route as written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteDefinition {
    /// Unique id.
    pub id: String,
    /// Where matched requests go: `http://`, `https://`, `lb://` or `forward:`.
    pub uri: String,
    /// Lower orders are tried first; ties keep file order. Default 0.
    pub order: i32,
    /// All must match.
    pub predicates: Vec<Definition>,
    /// Applied in order (after the default filters).
    pub filters: Vec<Definition>,
    /// `connect-timeout` and `response-timeout` in ms, and anything else for filters.
    pub metadata: serde_json::Map<String, Value>,
    /// The route's index in the file (or after the file's routes, for the locator's).
    pub(crate) index: usize,
    /// Where the route was defined, for errors.
    pub(crate) source: RouteSource,
}

/// Where a route was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteSource {
    /// The file's `routes`.
    File,
    /// Made by `discovery.locator` for a registered service.
    Locator,
}

impl RouteDefinition {
    /// The key of `key` in this route's definition, for errors: `routes.2.uri`, or
    /// `discovery.locator.filters.0` for the locator's routes.
    pub(crate) fn key(&self, key: &str) -> String {
        match self.source {
            RouteSource::File => format!("routes.{}.{key}", self.index),
            RouteSource::Locator => format!("discovery.locator.{key}"),
        }
    }
}

/// A configuration mistake: file, line, key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The key, as a dotted path (`routes.2.filters.0`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    discovery: DiscoveryConfig,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    default_filters: Vec<Value>,
    #[serde(default)]
    globalcors: Option<Value>,
    /// `spring.ssl.bundle.pem`, moved here by the Spring translation.
    #[serde(default)]
    ssl_bundles: std::collections::BTreeMap<String, PemBundle>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRoute {
    id: String,
    uri: String,
    #[serde(default)]
    order: i32,
    #[serde(default)]
    predicates: Vec<Value>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

/// The access log's settings, from the file's top level (and taken out of it):
/// `msa.gateway.access-log`, turned on also by Spring's
/// `reactor.netty.http.server.accessLogEnabled: true`.
fn access_log(
    file: &str,
    document: &yaml::Document,
    value: &mut Value,
) -> Result<crate::AccessLogConfig, ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        file: file.to_owned(),
        line: document.line(key),
        key: key.to_owned(),
        message,
    };
    let Some(root) = value.as_object_mut() else {
        return Ok(crate::AccessLogConfig::default());
    };
    let section = root
        .get("msa")
        .and_then(|msa| msa.pointer("/gateway/access-log"))
        .cloned();
    let mut config: crate::AccessLogConfig = match section {
        None => crate::AccessLogConfig::default(),
        Some(section) => serde_path_to_error::deserialize(&section).map_err(|e| {
            let path = e.path().to_string();
            let key = match path.as_str() {
                "." | "" => "msa.gateway.access-log".to_owned(),
                path => format!("msa.gateway.access-log.{path}"),
            };
            error(&key, e.inner().to_string())
        })?,
    };
    let spring = root
        .get("reactor")
        .and_then(|reactor| reactor.pointer("/netty/http/server"))
        .and_then(|server| {
            server
                .get("accessLogEnabled")
                .or_else(|| server.get("access-log-enabled"))
        })
        .cloned();
    match &spring {
        None => {}
        Some(Value::Bool(on)) => config.enabled |= *on,
        Some(other) => {
            return Err(error(
                "reactor.netty.http.server.accessLogEnabled",
                format!("expected true or false, not {other}"),
            ));
        }
    }
    // The gateway's own sections are all that is left at the top level of a plain file.
    if root
        .get("msa")
        .and_then(Value::as_object)
        .is_some_and(|msa| {
            msa.len() == 1
                && msa
                    .get("gateway")
                    .and_then(Value::as_object)
                    .is_some_and(|g| g.len() == 1)
        })
    {
        root.remove("msa");
    }
    if spring.is_some() {
        root.remove("reactor");
    }
    Ok(config)
}

impl GatewayConfig {
    /// Reads and checks the file's shape (routes and filters are checked when built).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text)
    }

    /// Reads a file's `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let document = yaml::parse(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: Some(e.line),
            key: String::new(),
            message: format!("not valid YAML: {}", e.message),
        })?;
        let mut value = document.value.clone();
        if value.is_null() {
            value = Value::Object(serde_json::Map::new());
        }
        let access_log = access_log(file, &document, &mut value)?;
        let mut spring = spring::Translation {
            file,
            document: &document,
            warnings: Vec::new(),
        };
        let (mut value, prefix) = spring.section(value)?;
        let resilience = value.as_object_mut().and_then(|v| v.remove("resilience4j"));
        let resilience = spring.resilience(resilience)?;
        let warnings = std::mem::take(&mut spring.warnings);
        let source = Source {
            file: file.to_owned(),
            lines: std::sync::Arc::new(document),
            prefix,
        };
        let raw: RawFile = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string().replace('[', ".").replace(']', "");
            let message = e.inner().to_string();
            // serde names the unknown field in the message; point at it.
            let path = match message.split('`').nth(1) {
                Some(field) if message.starts_with("unknown field") && !path.ends_with(field) => {
                    if path == "." || path.is_empty() {
                        field.to_owned()
                    } else {
                        format!("{path}.{field}")
                    }
                }
                _ => path,
            };
            source.error(path.trim_start_matches('.'), message)
        })?;

        let mut config = GatewayConfig {
            server: raw.server,
            discovery: raw.discovery,
            routes: Vec::with_capacity(raw.routes.len()),
            default_filters: Vec::with_capacity(raw.default_filters.len()),
            access_log,
            resilience,
            globalcors: raw.globalcors,
            ssl_bundles: raw.ssl_bundles,
            warnings,
            source,
        };
        if config.server.max_connections_per_upstream == 0 {
            return Err(config
                .source
                .error("server.max-connections-per-upstream", "must be at least 1"));
        }
        if config.server.workers == Some(0) {
            return Err(config.source.error("server.workers", "must be at least 1"));
        }
        for (index, filter) in raw.default_filters.iter().enumerate() {
            let definition = Definition::from_value(filter)
                .map_err(|e| config.source.error(&format!("default-filters.{index}"), e))?;
            config.default_filters.push(definition);
        }
        let mut ids = std::collections::HashSet::new();
        for (index, route) in raw.routes.into_iter().enumerate() {
            let at = |key: &str| format!("routes.{index}.{key}");
            if route.id.trim().is_empty() {
                return Err(config.source.error(&at("id"), "a route needs an id"));
            }
            if !ids.insert(route.id.clone()) {
                return Err(config
                    .source
                    .error(&at("id"), format!("route id {:?} is used twice", route.id)));
            }
            let definitions = |list: &[Value], kind: &str| {
                list.iter()
                    .enumerate()
                    .map(|(n, v)| {
                        Definition::from_value(v)
                            .map_err(|e| config.source.error(&at(&format!("{kind}.{n}")), e))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let predicates = definitions(&route.predicates, "predicates")?;
            let filters = definitions(&route.filters, "filters")?;
            config.routes.push(RouteDefinition {
                id: route.id,
                uri: route.uri,
                order: route.order,
                predicates,
                filters,
                metadata: route.metadata,
                index,
                source: RouteSource::File,
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
server:
  bind: 127.0.0.1:9090
routes:
  - id: orders
    uri: lb://orders
    order: 1
    predicates:
      - Path=/api/orders/**
    filters:
      - StripPrefix=1
      - name: AddRequestHeader
        args: { name: X-Source, value: gateway }
    metadata: { response-timeout: 2000 }
default-filters:
  - AddResponseHeader=X-Gateway, msa
";

    #[test]
    fn reads_routes_in_both_forms() {
        let config = GatewayConfig::parse("gateway.yaml", FILE).unwrap();
        assert_eq!(config.server.bind.port(), 9090);
        let route = &config.routes[0];
        assert_eq!(
            (route.id.as_str(), route.uri.as_str(), route.order),
            ("orders", "lb://orders", 1)
        );
        assert_eq!(route.predicates[0].name, "Path");
        assert_eq!(
            route.filters[1].args.required("value", 1).unwrap(),
            "gateway"
        );
        assert_eq!(route.metadata["response-timeout"], 2000);
        assert_eq!(config.default_filters[0].name, "AddResponseHeader");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad = FILE.replace("    order: 1\n", "    ordr: 1\n");
        let error = GatewayConfig::parse("gateway.yaml", &bad).unwrap_err();
        assert_eq!(error.key, "routes.0.ordr");
        assert_eq!(error.line, Some(6), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("gateway.yaml:6: routes.0.ordr: unknown field `ordr`"),
            "{error}"
        );

        let bad = FILE.replace("  bind: 127.0.0.1:9090", "  bind: nowhere");
        let error = GatewayConfig::parse("gateway.yaml", &bad).unwrap_err();
        assert_eq!(
            (error.key.as_str(), error.line),
            ("server.bind", Some(2)),
            "{error}"
        );

        let bad = FILE.replace("      - StripPrefix=1", "      - Strip Prefix=1");
        let error = GatewayConfig::parse("gateway.yaml", &bad).unwrap_err();
        assert_eq!(
            (error.key.as_str(), error.line),
            ("routes.0.filters.0", Some(10)),
            "{error}"
        );

        let error = GatewayConfig::parse("gateway.yaml", "routes: [\n").unwrap_err();
        assert!(error.message.starts_with("not valid YAML"), "{error}");
    }

    #[test]
    fn a_spring_boot_file_reads_too() {
        let spring = "spring:\n  cloud:\n    gateway:\n      routes:\n        - id: a\n          uri: http://127.0.0.1:1\n          bogus: 1\n";
        let error = GatewayConfig::parse("application.yml", spring).unwrap_err();
        assert_eq!(error.key, "spring.cloud.gateway.routes.0.bogus");
        assert_eq!(error.line, Some(7), "{error}");
    }

    #[test]
    fn spring_cloud_gateway_4_keys_read_as_the_gateway_s_own() {
        let spring = "\
server:
  port: 9191
  max-http-request-header-size: 16384
spring:
  cloud:
    gateway:
      server:
        webflux:
          httpclient:
            connect-timeout: 500
            response-timeout: 2s
            pool: { max-connections: 64, max-idle-time: 10s }
          routes:
            - id: a
              uri: http://127.0.0.1:1
resilience4j:
  circuitbreaker:
    instances:
      a: { sliding-window-size: 4 }
  bulkhead:
    instances:
      a: { max-concurrent-calls: 2 }
";
        let config = GatewayConfig::parse("application.yml", spring).unwrap();
        assert_eq!(config.server.bind, "0.0.0.0:9191".parse().unwrap());
        assert_eq!(config.server.max_header_size, 16384);
        assert_eq!(config.server.connect_timeout, Duration::from_millis(500));
        assert_eq!(config.server.response_timeout, Duration::from_secs(2));
        assert_eq!(config.server.max_connections_per_upstream, 64);
        assert_eq!(config.routes[0].id, "a");
        assert!(
            config
                .resilience
                .circuit_breaker
                .instances
                .contains_key("a")
        );
        let warned: Vec<_> = config
            .warnings
            .iter()
            .map(|w| (w.key.as_str(), w.line))
            .collect();
        assert_eq!(
            warned,
            [
                (
                    "spring.cloud.gateway.server.webflux.httpclient.pool.max-idle-time",
                    Some(12)
                ),
                ("resilience4j.bulkhead", Some(20)),
            ]
        );

        // A typo is still an error, at its line.
        let typo = spring.replace("          routes:", "          routs:");
        let error = GatewayConfig::parse("application.yml", &typo).unwrap_err();
        assert_eq!(
            (error.key.as_str(), error.line),
            ("spring.cloud.gateway.server.webflux.routs", Some(13)),
            "{error}"
        );
        let error = GatewayConfig::parse("a.yml", "server:\n  port: http\n").unwrap_err();
        assert_eq!((error.key.as_str(), error.line), ("server.port", Some(2)));
    }
}
