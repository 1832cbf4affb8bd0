//! Spring's keys: a Spring Cloud Gateway `application.yml` (4.x's
//! `spring.cloud.gateway.server.webflux`, or 3.x's `spring.cloud.gateway`) read unchanged.
//!
//! What msa implements is translated into the gateway's own sections: Spring Boot's
//! `server.port`/`server.address`/`server.max-http-request-header-size`, the gateway's
//! `httpclient` connect and response timeouts and pool size, and `resilience4j.*`. Spring
//! keys msa does not implement are accepted with one warning each (see
//! [`GatewayConfig::warnings`](super::GatewayConfig::warnings)); a key that is neither
//! msa's nor Spring's is an error naming it.

use msa_core::yaml;
use serde_json::{Map, Value};

use super::ConfigError;

/// Spring Cloud Gateway's settings (below its section) that msa does not implement.
const GATEWAY_ONLY: &[&str] = &[
    "enabled",
    "fail-on-route-definition-error",
    "filter",
    "global-filter",
    "predicate",
    "forwarded",
    "x-forwarded",
    "handler-mapping",
    "loadbalancer",
    "metrics",
    "observability",
    "redis-rate-limiter",
    "set-status",
    "streaming-media-types",
    "httpserver",
    "route-filter-cache-enabled",
    "restrictive-property-accessor-enabled",
    "trusted-proxies",
    "predicate-cache-enabled",
];

/// Spring Boot's `server.*` settings that msa does not implement.
const SERVER_ONLY: &[&str] = &[
    "shutdown",
    "http2",
    "netty",
    "compression",
    "error",
    "forward-headers-strategy",
    "use-forward-headers",
    "server-header",
    "max-http-response-header-size",
    "reactive",
    "servlet",
    "tomcat",
    "jetty",
    "undertow",
];

/// The sections of `resilience4j` that the gateway's filters read.
const RESILIENCE: &[&str] = &["circuitbreaker", "retry", "timelimiter"];

/// Reads the file's keys as Spring would write them into the gateway's own shape, noting
/// Spring keys msa does not implement in `warnings`.
pub(super) struct Translation<'a> {
    pub(super) file: &'a str,
    pub(super) document: &'a yaml::Document,
    pub(super) warnings: Vec<ConfigError>,
}

impl Translation<'_> {
    fn at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: self.document.line(key),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn warn(&mut self, key: &str, message: &str) {
        let warning = self.at(key, message);
        self.warnings.push(warning);
    }

    /// The gateway's section of `root` and the prefix of its keys: the whole file, or a
    /// Spring Boot file's `spring.cloud.gateway[.server.webflux]` with its top-level
    /// `server` and `resilience4j` moved in. Other Spring Boot keys are warned about.
    pub(super) fn section(&mut self, root: Value) -> Result<(Value, String), ConfigError> {
        let Value::Object(mut root) = root else {
            return Ok((root, String::new()));
        };
        let gateway = root
            .get("spring")
            .and_then(|spring| spring.pointer("/cloud/gateway"))
            .cloned();
        let Some(gateway) = gateway else {
            let resilience = root.remove("resilience4j");
            let bundles = self.bundles(&mut root);
            let mut section = self.gateway(root, "")?;
            if let Some(resilience) = resilience {
                section.insert("resilience4j".into(), resilience);
            }
            if let Some(bundles) = bundles {
                section.insert("ssl-bundles".into(), bundles);
            }
            return Ok((Value::Object(section), String::new()));
        };
        let webflux = gateway.pointer("/server/webflux").cloned();
        let (section, prefix) = match webflux {
            Some(webflux) => {
                for key in gateway.as_object().into_iter().flat_map(Map::keys) {
                    if key != "server" {
                        self.warn(
                            &format!("spring.cloud.gateway.{key}"),
                            "Spring Cloud Gateway 4.x reads this under \
                             spring.cloud.gateway.server.webflux: ignored",
                        );
                    }
                }
                (webflux, "spring.cloud.gateway.server.webflux.")
            }
            None => (gateway, "spring.cloud.gateway."),
        };
        let Value::Object(section) = section else {
            let key = prefix.trim_end_matches('.');
            return Err(self.at(key, "expected a mapping"));
        };
        let mut section = self.gateway(section, prefix)?;
        if let Some(bundles) = self.bundles(&mut root) {
            section.insert("ssl-bundles".into(), bundles);
        }
        for (key, value) in root {
            match key.as_str() {
                "server" => {
                    let server = self.server(value, "server.")?;
                    // Over what `httpclient` said: Spring Boot's server keys are the
                    // gateway's own.
                    match section.get_mut("server") {
                        Some(Value::Object(client)) => client.extend(server),
                        _ => {
                            section.insert("server".into(), Value::Object(server));
                        }
                    }
                }
                "resilience4j" => {
                    section.insert(key, value);
                }
                "spring" => self.spring(&value),
                _ => self.warn(&key, "not read by msa-gateway: ignored"),
            }
        }
        Ok((Value::Object(section), prefix.to_owned()))
    }

    /// `spring.ssl.bundle.pem` (what `server.ssl` names), taken out of `root`; other
    /// bundle kinds are warned about.
    fn bundles(&mut self, root: &mut Map<String, Value>) -> Option<Value> {
        let spring = root.get_mut("spring")?.as_object_mut()?;
        let mut ssl = spring.remove("ssl")?;
        if spring.is_empty() {
            root.remove("spring");
        }
        let bundles = ssl.get_mut("bundle").and_then(Value::as_object_mut)?;
        for kind in bundles.keys() {
            if kind != "pem" {
                let key = format!("spring.ssl.bundle.{kind}");
                self.warn(
                    &key,
                    "msa reads PEM bundles only (spring.ssl.bundle.pem): ignored",
                );
            }
        }
        bundles.remove("pem")
    }

    /// Warns about every key under `spring` but the gateway's.
    fn spring(&mut self, spring: &Value) {
        for (key, value) in spring.as_object().into_iter().flatten() {
            if key != "cloud" {
                self.warn(&format!("spring.{key}"), "not read by msa-gateway: ignored");
                continue;
            }
            for key in value.as_object().into_iter().flat_map(Map::keys) {
                if key != "gateway" {
                    let key = format!("spring.cloud.{key}");
                    self.warn(&key, "not read by msa-gateway: ignored");
                }
            }
        }
    }

    /// The gateway section with Spring's `httpclient` moved into `server`, and the keys
    /// msa does not implement taken out with a warning.
    fn gateway(
        &mut self,
        section: Map<String, Value>,
        prefix: &str,
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut out = Map::new();
        let mut client = Map::new();
        for (key, value) in section {
            match key.as_str() {
                "httpclient" => client = self.httpclient(value, &format!("{prefix}httpclient."))?,
                "server" if prefix.is_empty() => {
                    let server = self.server(value, "server.")?;
                    out.insert(key, Value::Object(server));
                }
                "server" => {}
                "discovery" => {
                    let discovery = self.discovery(value, &format!("{prefix}discovery."));
                    out.insert(key, discovery);
                }
                _ if GATEWAY_ONLY.contains(&key.as_str()) => {
                    let key = format!("{prefix}{key}");
                    self.warn(
                        &key,
                        "a Spring Cloud Gateway setting msa does not implement",
                    );
                }
                _ => {
                    out.insert(key, value);
                }
            }
        }
        if !client.is_empty() {
            let server = out
                .entry("server")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(server) = server {
                for (key, value) in client {
                    // The gateway's own `server` keys say more than Spring's defaults.
                    server.entry(key).or_insert(value);
                }
            }
        }
        Ok(out)
    }

    /// `discovery` with the locator's SpEL settings (which msa does not evaluate) taken
    /// out with a warning.
    fn discovery(&mut self, mut value: Value, prefix: &str) -> Value {
        let locator = value.get_mut("locator").and_then(Value::as_object_mut);
        let mut warn = Vec::new();
        if let Some(locator) = locator {
            for key in [
                "include-expression",
                "includeExpression",
                "url-expression",
                "urlExpression",
            ] {
                if locator.remove(key).is_some() {
                    warn.push(key);
                }
            }
        }
        for key in warn {
            self.warn(
                &format!("{prefix}locator.{key}"),
                "a SpEL expression msa does not evaluate: every service gets a route, to lb://<service>",
            );
        }
        value
    }

    /// Spring Cloud Gateway's `httpclient` as the gateway's `server` keys.
    fn httpclient(
        &mut self,
        value: Value,
        prefix: &str,
    ) -> Result<Map<String, Value>, ConfigError> {
        let Value::Object(client) = value else {
            return Err(self.at(prefix.trim_end_matches('.'), "expected a mapping"));
        };
        let mut server = Map::new();
        for (key, value) in client {
            match key.as_str() {
                // Milliseconds, as Spring reads them (msa's durations take a bare number
                // as milliseconds too).
                "connect-timeout" | "connectTimeout" => {
                    server.insert("connect-timeout".into(), value);
                }
                // A duration (`5s`), or milliseconds.
                "response-timeout" | "responseTimeout" => {
                    server.insert("response-timeout".into(), value);
                }
                "pool" => {
                    for (key, value) in value.as_object().into_iter().flatten() {
                        match key.as_str() {
                            "max-connections" | "maxConnections" => {
                                server.insert("max-connections-per-upstream".into(), value.clone());
                            }
                            _ => self.warn(
                                &format!("{prefix}pool.{key}"),
                                "a Spring Cloud Gateway setting msa does not implement",
                            ),
                        }
                    }
                }
                _ => self.warn(
                    &format!("{prefix}{key}"),
                    "a Spring Cloud Gateway setting msa does not implement",
                ),
            }
        }
        Ok(server)
    }

    /// A `server` section with Spring Boot's keys read as the gateway's.
    fn server(&mut self, value: Value, prefix: &str) -> Result<Map<String, Value>, ConfigError> {
        let Value::Object(server) = value else {
            return Err(self.at(prefix.trim_end_matches('.'), "expected a mapping"));
        };
        let mut out = Map::new();
        let mut port = None;
        let mut address = None;
        for (key, value) in server {
            match key.as_str() {
                "port" => port = Some(value),
                "address" => address = Some(value),
                "max-http-request-header-size" | "maxHttpRequestHeaderSize" => {
                    out.insert("max-header-size".into(), value);
                }
                _ if SERVER_ONLY.contains(&key.as_str()) => {
                    let key = format!("{prefix}{key}");
                    self.warn(&key, "a Spring Boot server setting msa does not implement");
                }
                _ => {
                    out.insert(key, value);
                }
            }
        }
        if port.is_some() || address.is_some() {
            if out.contains_key("bind") {
                let key = format!("{prefix}bind");
                return Err(self.at(&key, "give either bind or Spring's port and address"));
            }
            let port = match port {
                None => 8080,
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|p| *p <= u64::from(u16::MAX))
                    .ok_or_else(|| {
                        self.at(&format!("{prefix}port"), format!("{value} is not a port"))
                    })?,
            };
            // Spring Boot listens on every interface unless `address` says otherwise.
            let address = match address {
                None => std::net::IpAddr::from([0, 0, 0, 0]),
                Some(value) => value
                    .as_str()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| {
                        let message = format!("{value} is not an IP address");
                        self.at(&format!("{prefix}address"), message)
                    })?,
            };
            let bind = std::net::SocketAddr::new(address, port as u16);
            out.insert("bind".into(), Value::String(bind.to_string()));
        }
        Ok(out)
    }

    /// The `resilience4j` sections the filters read; the others are warned about.
    pub(super) fn resilience(
        &mut self,
        value: Option<Value>,
    ) -> Result<super::ResilienceConfig, ConfigError> {
        let mut config = super::ResilienceConfig::default();
        let Some(value) = value else {
            return Ok(config);
        };
        let Value::Object(sections) = value else {
            return Err(self.at("resilience4j", "expected a mapping"));
        };
        for (key, section) in sections {
            let name = key.to_ascii_lowercase().replace(['-', '_'], "");
            if !RESILIENCE.contains(&name.as_str()) {
                let key = format!("resilience4j.{key}");
                self.warn(&key, "not read by msa-gateway (its filters read circuitbreaker, retry and timelimiter)");
                continue;
            }
            let read: msa_breaker::Section =
                serde_path_to_error::deserialize(&section).map_err(|e| {
                    let path = e.path().to_string();
                    let key = match path.as_str() {
                        "." | "" => format!("resilience4j.{key}"),
                        path => format!("resilience4j.{key}.{path}"),
                    };
                    self.at(&key, e.inner().to_string())
                })?;
            match name.as_str() {
                "circuitbreaker" => config.circuit_breaker = read,
                "retry" => config.retry = read,
                _ => config.time_limiter = read,
            }
        }
        Ok(config)
    }
}
