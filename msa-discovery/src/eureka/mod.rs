//! Eureka's wire model, as real Eureka clients send and expect it (JSON).
//!
//! The quirks that the Java client, eureka-js-client and py-eureka-client depend on:
//!
//! - `port` and `securePort` are `{"$": 8081, "@enabled": "true"}`: the number a number,
//!   the flag a **string**;
//! - URLs, VIP addresses, flags and timestamps after `metadata` are written as strings;
//!   readers accept strings or numbers;
//! - `overriddenstatus` is read as well as `overriddenStatus` (which is written);
//! - an empty metadata map arrives as `{"@class": "java.util.Collections$EmptyMap"}`; the
//!   `@class` key is ignored;
//! - `application` and `instance` are written as arrays and read as an array or a single
//!   object.
//!
//! # Examples
//!
//! ```
//! use msa_discovery::eureka::InstanceEnvelope;
//!
//! let body = r#"{"instance": {"instanceId": "h:orders:8081", "hostName": "h", "app": "ORDERS",
//!   "ipAddr": "127.0.0.1", "status": "UP", "port": {"$": 8081, "@enabled": "true"},
//!   "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
//!   "metadata": {"@class": "java.util.Collections$EmptyMap"}, "lastDirtyTimestamp": "1700000000000"}}"#;
//! let envelope: InstanceEnvelope = serde_json::from_str(body).unwrap();
//! let instance = envelope.instance.to_service_instance();
//! assert_eq!((instance.service.as_str(), instance.port), ("orders", 8081));
//! assert!(envelope.instance.metadata.is_empty());
//! ```

mod flex;
pub mod xml;

use std::collections::BTreeMap;

use msa_core::{InstanceStatus, Scheme, ServiceInstance};
use serde::{Deserialize, Serialize};

pub use self::flex::{FlexBool, FlexU64};

/// The data center class every non-AWS client sends.
pub const DEFAULT_DATA_CENTER_CLASS: &str =
    "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";

/// `{"instance": {...}}`: the body of a registration and of a one-instance read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceEnvelope {
    /// The instance.
    pub instance: InstanceInfo,
}

/// A port and whether it is enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The port number.
    #[serde(rename = "$", with = "flex::number")]
    pub port: u16,
    /// Whether it is used, written `"true"`/`"false"`.
    #[serde(rename = "@enabled", default)]
    pub enabled: FlexBool,
}

impl Port {
    fn enabled(port: u16) -> Self {
        Port {
            port,
            enabled: FlexBool(true),
        }
    }

    fn disabled(port: u16) -> Self {
        Port {
            port,
            enabled: FlexBool(false),
        }
    }
}

fn default_port() -> Port {
    Port::enabled(80)
}

fn default_secure_port() -> Port {
    Port::disabled(443)
}

/// Where the instance runs; `name` is `MyOwn` outside AWS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCenterInfo {
    /// The Java class name clients send.
    #[serde(rename = "@class", default = "default_class")]
    pub class: String,
    /// `MyOwn` or `Amazon`.
    #[serde(default)]
    pub name: String,
}

fn default_class() -> String {
    DEFAULT_DATA_CENTER_CLASS.to_owned()
}

impl Default for DataCenterInfo {
    fn default() -> Self {
        DataCenterInfo {
            class: default_class(),
            name: "MyOwn".to_owned(),
        }
    }
}

/// The lease an instance asks for, and its history (milliseconds since the epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaseInfo {
    /// How often the client renews.
    pub renewal_interval_in_secs: FlexU64,
    /// How long the lease lasts without a renewal.
    pub duration_in_secs: FlexU64,
    /// When the instance registered.
    pub registration_timestamp: FlexU64,
    /// When it last renewed.
    pub last_renewal_timestamp: FlexU64,
    /// When it was evicted (0: not).
    pub eviction_timestamp: FlexU64,
    /// When it first reported UP.
    pub service_up_timestamp: FlexU64,
}

/// How an instance changed, in a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    /// Registered.
    Added,
    /// Changed (status, metadata, renewal of a changed instance).
    Modified,
    /// Cancelled or evicted.
    Deleted,
}

/// Eureka's `InstanceInfo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// Unique within the application.
    #[serde(default)]
    pub instance_id: String,
    /// The host name (an IP address with Spring's `prefer-ip-address`).
    #[serde(default)]
    pub host_name: String,
    /// The application name, upper-case.
    #[serde(default)]
    pub app: String,
    /// The IP address.
    #[serde(default)]
    pub ip_addr: String,
    /// The status the instance reports.
    #[serde(default)]
    pub status: InstanceStatus,
    /// A status set by an operator, which wins over `status` unless UNKNOWN.
    #[serde(default, alias = "overriddenstatus")]
    pub overridden_status: InstanceStatus,
    /// The plain port.
    #[serde(default = "default_port")]
    pub port: Port,
    /// The TLS port.
    #[serde(default = "default_secure_port")]
    pub secure_port: Port,
    /// Always 1 (US) in practice.
    #[serde(default = "one", with = "flex::number")]
    pub country_id: u64,
    /// Where the instance runs.
    #[serde(default)]
    pub data_center_info: DataCenterInfo,
    /// The lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_info: Option<LeaseInfo>,
    /// Free-form metadata (`zone`, `weight`, `version`, ...).
    #[serde(default, with = "flex::metadata")]
    pub metadata: BTreeMap<String, String>,
    /// The home page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_page_url: Option<String>,
    /// The status page (Spring: `/actuator/info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page_url: Option<String>,
    /// The health check (Spring: `/actuator/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_url: Option<String>,
    /// The VIP address (usually the application name, lower-case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_address: Option<String>,
    /// The secure VIP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_vip_address: Option<String>,
    /// Whether this instance is a Eureka server.
    #[serde(default)]
    pub is_coordinating_discovery_server: FlexBool,
    /// When the server last changed this record.
    #[serde(default)]
    pub last_updated_timestamp: FlexU64,
    /// When the client last changed this record.
    #[serde(default)]
    pub last_dirty_timestamp: FlexU64,
    /// In deltas: how the instance changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
}

fn one() -> u64 {
    1
}

/// A registration without the fields Eureka requires.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInstance {
    /// Required fields are missing or empty.
    #[error("missing {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// `app` in the body is not the application in the path.
    #[error("app {body:?} does not match {path:?} in the path")]
    AppMismatch {
        /// The body's `app`.
        body: String,
        /// The path's application, upper-cased.
        path: String,
    },
    /// A part of the registration is larger than the registry takes.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// What is too large (`metadata`, `instanceId`).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The registry's limit.
        limit: usize,
    },
    /// The registry holds as many instances as it is allowed to.
    #[error("the registry holds {limit} instances, its limit")]
    Full {
        /// The limit.
        limit: usize,
    },
}

impl InstanceInfo {
    /// Checks what the Eureka server checks on registration: `instanceId`, `hostName`,
    /// `ipAddr`, `app` and `dataCenterInfo.name` present, and `app` equal to the path's
    /// application (case-insensitively).
    pub fn validate_for(&self, app: &str) -> Result<(), InvalidInstance> {
        let missing: Vec<&'static str> = [
            ("instanceId", &self.instance_id),
            ("hostName", &self.host_name),
            ("ipAddr", &self.ip_addr),
            ("app", &self.app),
            ("dataCenterInfo.name", &self.data_center_info.name),
        ]
        .into_iter()
        .filter(|(_, value)| value.trim().is_empty())
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(InvalidInstance::Missing(missing));
        }
        if !self.app.eq_ignore_ascii_case(app) {
            return Err(InvalidInstance::AppMismatch {
                body: self.app.clone(),
                path: app.to_ascii_uppercase(),
            });
        }
        Ok(())
    }

    /// The status that counts: the override unless it is UNKNOWN.
    pub fn effective_status(&self) -> InstanceStatus {
        match self.overridden_status {
            InstanceStatus::Unknown => self.status,
            overridden => overridden,
        }
    }

    /// The instance in msa's model: the service is the application name lower-cased; a
    /// secure port that is enabled wins (https); `zone` and `weight` come from metadata.
    pub fn to_service_instance(&self) -> ServiceInstance {
        let (scheme, port) = if self.secure_port.enabled.0 {
            (Scheme::Https, self.secure_port.port)
        } else {
            (Scheme::Http, self.port.port)
        };
        let mut instance =
            ServiceInstance::new(self.app.to_ascii_lowercase(), self.host_name.clone(), port)
                .with_id(self.instance_id.clone())
                .with_scheme(scheme)
                .with_status(self.effective_status());
        instance.metadata = self.metadata.clone();
        instance.zone = self.metadata.get("zone").cloned();
        if let Some(weight) = self.metadata.get("weight").and_then(|w| w.parse().ok()) {
            instance = instance.with_weight(weight);
        }
        instance
    }

    /// The Eureka record of an msa instance, with a lease of `lease_secs`, renewed every
    /// `renewal_secs`.
    pub fn from_service_instance(
        instance: &ServiceInstance,
        renewal_secs: u64,
        lease_secs: u64,
    ) -> Self {
        let base = format!("{}://{}", instance.scheme, instance.authority());
        let mut metadata = instance.metadata.clone();
        if let Some(zone) = &instance.zone {
            metadata.insert("zone".into(), zone.clone());
        }
        let secure = instance.scheme == Scheme::Https;
        InstanceInfo {
            instance_id: instance.id.clone(),
            host_name: instance.host.clone(),
            app: instance.service.to_ascii_uppercase(),
            ip_addr: instance.host.clone(),
            status: instance.status,
            overridden_status: InstanceStatus::Unknown,
            port: if secure {
                Port::disabled(instance.port)
            } else {
                Port::enabled(instance.port)
            },
            secure_port: if secure {
                Port::enabled(instance.port)
            } else {
                Port::disabled(443)
            },
            country_id: 1,
            data_center_info: DataCenterInfo::default(),
            lease_info: Some(LeaseInfo {
                renewal_interval_in_secs: FlexU64(renewal_secs),
                duration_in_secs: FlexU64(lease_secs),
                ..LeaseInfo::default()
            }),
            metadata,
            home_page_url: Some(format!("{base}/")),
            status_page_url: Some(format!("{base}/actuator/info")),
            health_check_url: Some(format!("{base}/actuator/health")),
            vip_address: Some(instance.service.to_ascii_lowercase()),
            secure_vip_address: Some(instance.service.to_ascii_lowercase()),
            is_coordinating_discovery_server: FlexBool(false),
            last_updated_timestamp: FlexU64(0),
            // As Eureka's client: the record was last changed now.
            last_dirty_timestamp: FlexU64(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            action_type: None,
        }
    }
}

/// One application and its instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// The application name, upper-case.
    pub name: String,
    /// Its instances (read from an array or a single object).
    #[serde(default, with = "flex::one_or_many")]
    pub instance: Vec<InstanceInfo>,
}

/// `{"application": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplicationEnvelope {
    /// The application.
    pub application: Application,
}

/// The registry, or a delta of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applications {
    /// The delta version (a counter).
    #[serde(rename = "versions__delta", default, with = "flex::string")]
    pub versions_delta: String,
    /// The reconcile hash; see [`apps_hashcode`].
    #[serde(rename = "apps__hashcode", default)]
    pub apps_hashcode: String,
    /// The applications (read from an array or a single object).
    #[serde(default, with = "flex::one_or_many")]
    pub application: Vec<Application>,
}

/// `{"applications": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplicationsEnvelope {
    /// The registry.
    pub applications: Applications,
}

/// Eureka's reconcile hash: `STATUS_count_` for each status present, statuses in sorted
/// order (`DOWN_1_UP_3_`). Delta clients recompute it after applying a delta and fetch
/// the whole registry when it differs.
///
/// # Examples
///
/// ```
/// use msa_core::InstanceStatus::{Down, Up};
///
/// assert_eq!(msa_discovery::eureka::apps_hashcode([Up, Up, Down, Up]), "DOWN_1_UP_3_");
/// assert_eq!(msa_discovery::eureka::apps_hashcode([]), "");
/// ```
pub fn apps_hashcode(statuses: impl IntoIterator<Item = InstanceStatus>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

impl Applications {
    /// The hash of these applications' instances (their `status`, as Eureka counts).
    pub fn hashcode(&self) -> String {
        apps_hashcode(
            self.application
                .iter()
                .flat_map(|a| a.instance.iter().map(|i| i.status)),
        )
    }
}

#[cfg(test)]
mod tests;
