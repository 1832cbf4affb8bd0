//! The service instance model shared by the registry, discovery clients and the load balancer.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The lifecycle status of a service instance, with Eureka's names on the wire.
///
/// Only [`InstanceStatus::Up`] instances receive traffic from msa's load balancer.
///
/// # Examples
///
/// ```
/// use msa_core::InstanceStatus;
///
/// let status: InstanceStatus = "OUT_OF_SERVICE".parse().unwrap();
/// assert_eq!(status, InstanceStatus::OutOfService);
/// assert_eq!(status.to_string(), "OUT_OF_SERVICE");
/// assert!(!status.is_up());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Ready to receive traffic.
    Up,
    /// Unhealthy: must not receive traffic.
    Down,
    /// Started but not yet ready.
    Starting,
    /// Taken out of rotation on purpose (for example by an operator's status override).
    OutOfService,
    /// Nothing is known yet.
    #[default]
    Unknown,
}

impl InstanceStatus {
    /// All statuses, in declaration order.
    pub const ALL: [InstanceStatus; 5] = [
        InstanceStatus::Up,
        InstanceStatus::Down,
        InstanceStatus::Starting,
        InstanceStatus::OutOfService,
        InstanceStatus::Unknown,
    ];

    /// The wire name (`UP`, `DOWN`, `STARTING`, `OUT_OF_SERVICE`, `UNKNOWN`).
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Up => "UP",
            InstanceStatus::Down => "DOWN",
            InstanceStatus::Starting => "STARTING",
            InstanceStatus::OutOfService => "OUT_OF_SERVICE",
            InstanceStatus::Unknown => "UNKNOWN",
        }
    }

    /// Whether the instance may receive traffic.
    pub const fn is_up(self) -> bool {
        matches!(self, InstanceStatus::Up)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no [`InstanceStatus`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown instance status {0:?}: expected one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN"
)]
pub struct ParseStatusError(String);

impl FromStr for InstanceStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseStatusError(s.to_owned()))
    }
}

/// The URI scheme an instance serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URI of this scheme implies when it names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weight an instance carries when no weight is given.
pub const DEFAULT_WEIGHT: u32 = 1;

/// One running copy of a service, as registries and load balancers see it.
///
/// Service names are compared case-insensitively across msa (Eureka upper-cases them); the
/// name is kept as given here.
///
/// # Examples
///
/// ```
/// use msa_core::{InstanceStatus, ServiceInstance};
///
/// let instance = ServiceInstance::new("orders", "10.0.0.7", 8080)
///     .with_zone("eu-west-1a")
///     .with_metadata("version", "1.4.2")
///     .with_status(InstanceStatus::Up);
///
/// assert_eq!(instance.id, "10.0.0.7:orders:8080");
/// assert_eq!(instance.uri().to_string(), "http://10.0.0.7:8080/");
/// assert_eq!(instance.zone.as_deref(), Some("eu-west-1a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    /// Unique within the service; defaults to `host:service:port`, as Spring Cloud does.
    pub id: String,
    /// The logical service name (`orders`), the host part of `http://orders/...` URIs.
    pub service: String,
    /// Host name or IP address.
    pub host: String,
    /// Port the instance listens on.
    pub port: u16,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Availability zone, used by zone-preferring load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Relative weight for weighted strategies (at least 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lifecycle status; only `UP` instances receive traffic.
    #[serde(default)]
    pub status: InstanceStatus,
    /// Free-form key/value metadata (Eureka's `metadata` map).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl ServiceInstance {
    /// An `UP` instance of `service` at `host:port` over plain HTTP, with the default id.
    pub fn new(service: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        let service = service.into();
        let host = host.into();
        ServiceInstance {
            id: format!("{host}:{service}:{port}"),
            service,
            host,
            port,
            scheme: Scheme::Http,
            zone: None,
            weight: DEFAULT_WEIGHT,
            status: InstanceStatus::Up,
            metadata: BTreeMap::new(),
        }
    }

    /// Replaces the instance id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the scheme.
    pub fn with_scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the weight; a weight of 0 is raised to 1.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: InstanceStatus) -> Self {
        self.status = status;
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// `host:port`, with IPv6 hosts bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The base URI of the instance, `scheme://host:port/`.
    ///
    /// A host that cannot form a URI (for example one containing spaces) yields the error
    /// from [`http::Uri`]'s parser.
    pub fn try_uri(&self) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme(self.scheme.as_str())
            .authority(self.authority())
            .path_and_query("/")
            .build()
    }

    /// The base URI of the instance, `scheme://host:port/`.
    ///
    /// # Panics
    ///
    /// When the host cannot be part of a URI; use [`ServiceInstance::try_uri`] for hosts
    /// that come from outside the program.
    pub fn uri(&self) -> http::Uri {
        self.try_uri()
            .unwrap_or_else(|e| panic!("instance {} has no valid URI: {e}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_wire_names() {
        for status in InstanceStatus::ALL {
            assert_eq!(status.as_str().parse::<InstanceStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(
                serde_json::from_str::<InstanceStatus>(&json).unwrap(),
                status
            );
        }
        assert!("SIDEWAYS".parse::<InstanceStatus>().is_err());
        assert_eq!("up".parse::<InstanceStatus>(), Ok(InstanceStatus::Up));
    }

    #[test]
    fn instance_serde_fills_defaults() {
        let instance: ServiceInstance =
            serde_json::from_str(r#"{"id":"a","service":"orders","host":"::1","port":9000}"#)
                .unwrap();
        assert_eq!(instance.scheme, Scheme::Http);
        assert_eq!(instance.weight, DEFAULT_WEIGHT);
        assert_eq!(instance.status, InstanceStatus::Unknown);
        assert_eq!(instance.uri().to_string(), "http://[::1]:9000/");

        let back: ServiceInstance =
            serde_json::from_value(serde_json::to_value(&instance).unwrap()).unwrap();
        assert_eq!(back, instance);
    }

    #[test]
    fn bad_host_is_an_error_not_a_panic() {
        let instance = ServiceInstance::new("orders", "bad host", 80);
        assert!(instance.try_uri().is_err());
        let https = ServiceInstance::new("orders", "h", 8443).with_scheme(Scheme::Https);
        assert_eq!(https.uri().to_string(), "https://h:8443/");
    }
}
