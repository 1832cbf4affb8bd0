//! Spring Cloud Bus over msa-stream: instances broadcast management events (refresh your
//! configuration, change these properties) to each other through the destination
//! `springCloudBus`, in the JSON Spring Cloud Bus writes, so msa and Spring services on one
//! broker act on each other's events.
//!
//! Every instance consumes the destination without a group (each gets every event),
//! ignores the events it sent itself and those whose `destinationService` does not match
//! its bus id (`<app>:<profiles>:<random>`; patterns such as `orders:**`), acts on the
//! rest and answers each with an `AckRemoteApplicationEvent`.
//!
//! ```
//! use msa_stream::bus::service_matches;
//!
//! assert!(service_matches("**", "orders:default:3f2a"));
//! assert!(service_matches("orders:**", "orders:default:3f2a"));
//! assert!(service_matches("orders", "orders:default:3f2a"));
//! assert!(!service_matches("payments:**", "orders:default:3f2a"));
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{BindingSettings, StreamSettings};
use crate::message::Message;
use crate::stream::{StreamBridge, StreamBuilder, StreamError};

/// The destination Spring Cloud Bus uses.
pub const DESTINATION: &str = "springCloudBus";
/// The consumer the bus registers (its input binding is `springCloudBus-in-0`).
pub const CONSUMER: &str = "springCloudBus";
/// The binding the bus sends through.
pub const OUTPUT: &str = "springCloudBus-out-0";

/// Values an environment change may carry, at most.
pub const MAX_VALUES: usize = 256;
/// Bytes of names and values an environment change may carry, at most.
pub const MAX_VALUES_BYTES: usize = 64 * 1024;
/// Bytes of a destination pattern or service id, at most.
pub const MAX_ID: usize = 255;

/// What every remote event carries (Spring's `RemoteApplicationEvent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHead {
    /// The event's unique id.
    pub id: String,
    /// The bus id of the instance that sent it.
    pub origin_service: String,
    /// Which instances it is for: `**`, `orders:**`, a bus id; empty (Spring's `null`):
    /// all.
    #[serde(default)]
    pub destination_service: String,
    /// When it was sent, in milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: i64,
}

/// A Spring Cloud Bus event, tagged by its `type` as Spring writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum RemoteEvent {
    /// Refresh the configuration (`/actuator/busrefresh`).
    RefreshRemoteApplicationEvent(EventHead),
    /// Set these properties (`/actuator/busenv`).
    EnvironmentChangeRemoteApplicationEvent {
        /// The event.
        #[serde(flatten)]
        head: EventHead,
        /// The properties to set.
        values: BTreeMap<String, String>,
    },
    /// An instance acted on an event.
    #[serde(rename_all = "camelCase")]
    AckRemoteApplicationEvent {
        /// The acknowledgement.
        #[serde(flatten)]
        head: EventHead,
        /// The id of the event acted on.
        ack_id: String,
        /// The destination the event acted on had.
        ack_destination_service: String,
        /// The class of the event acted on, as Spring names it.
        #[serde(default)]
        event: Option<String>,
    },
    /// An event msa does not act on (an application's own `RemoteApplicationEvent`s).
    #[serde(other)]
    Other,
}

impl RemoteEvent {
    /// The event's id, origin and destination (none for [`Other`](Self::Other)).
    pub fn head(&self) -> Option<&EventHead> {
        match self {
            RemoteEvent::RefreshRemoteApplicationEvent(head)
            | RemoteEvent::EnvironmentChangeRemoteApplicationEvent { head, .. }
            | RemoteEvent::AckRemoteApplicationEvent { head, .. } => Some(head),
            RemoteEvent::Other => None,
        }
    }

    fn class(&self) -> &'static str {
        match self {
            RemoteEvent::RefreshRemoteApplicationEvent(_) => {
                "org.springframework.cloud.bus.event.RefreshRemoteApplicationEvent"
            }
            RemoteEvent::EnvironmentChangeRemoteApplicationEvent { .. } => {
                "org.springframework.cloud.bus.event.EnvironmentChangeRemoteApplicationEvent"
            }
            RemoteEvent::AckRemoteApplicationEvent { .. } => {
                "org.springframework.cloud.bus.event.AckRemoteApplicationEvent"
            }
            RemoteEvent::Other => "org.springframework.cloud.bus.event.RemoteApplicationEvent",
        }
    }

    /// Why a peer's event is refused, if it is: ids and values past the bounds.
    fn refused(&self) -> Option<String> {
        let head = self.head()?;
        if [&head.id, &head.origin_service, &head.destination_service]
            .iter()
            .any(|s| s.len() > MAX_ID)
        {
            return Some(format!("an id longer than {MAX_ID} bytes"));
        }
        if let RemoteEvent::EnvironmentChangeRemoteApplicationEvent { values, .. } = self {
            let bytes: usize = values.iter().map(|(k, v)| k.len() + v.len()).sum();
            if values.len() > MAX_VALUES || bytes > MAX_VALUES_BYTES {
                return Some(format!(
                    "{} values of {bytes} bytes (at most {MAX_VALUES} of {MAX_VALUES_BYTES})",
                    values.len()
                ));
            }
        }
        None
    }
}

/// Whether the bus id `id` matches the destination pattern `pattern`, as Spring Cloud
/// Bus's `ServiceMatcher` decides: segments split at `:`, `*` any run of characters within
/// a segment, `**` any number of segments; a pattern without `**` also matches the ids it
/// starts (`orders` is `orders:**`); no pattern matches every id.
pub fn service_matches(pattern: &str, id: &str) -> bool {
    fn segments(pattern: &[&str], id: &[&str]) -> bool {
        match (pattern.first(), id.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                segments(&pattern[1..], id) || (!id.is_empty() && segments(pattern, &id[1..]))
            }
            (Some(p), Some(i)) => {
                segment(p.as_bytes(), i.as_bytes()) && segments(&pattern[1..], &id[1..])
            }
            _ => false,
        }
    }
    /// `*` wildcards in one segment, matched greedily with one backtrack point: linear
    /// in practice, quadratic at worst, whatever a peer sends.
    fn segment(p: &[u8], s: &[u8]) -> bool {
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while j < s.len() {
            if i < p.len() && p[i] == b'*' {
                star = Some((i, j));
                i += 1;
            } else if i < p.len() && p[i] == s[j] {
                i += 1;
                j += 1;
            } else if let Some((at, from)) = star {
                i = at + 1;
                j = from + 1;
                star = Some((at, from + 1));
            } else {
                return false;
            }
        }
        p[i..].iter().all(|&c| c == b'*')
    }
    if pattern.is_empty() {
        return true;
    }
    if pattern.len() > MAX_ID || pattern.matches("**").count() > 8 {
        return false;
    }
    let id: Vec<&str> = id.split(':').collect();
    let pattern_segments: Vec<&str> = pattern.split(':').collect();
    segments(&pattern_segments, &id)
        || (!pattern.ends_with("**")
            && segments(
                &pattern_segments
                    .iter()
                    .copied()
                    .chain(["**"])
                    .collect::<Vec<_>>(),
                &id,
            ))
}

/// What an instance does with an event meant for it.
pub type Listener = Arc<dyn Fn(RemoteEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// One instance's place on the bus: its id, and the stream it sends through.
#[derive(Clone, Debug)]
pub struct Bus {
    id: String,
    bridge: StreamBridge,
}

impl Bus {
    /// The bus for the instance `id`, sending through `bridge` (connected once the stream
    /// has started).
    pub fn new(id: impl Into<String>, bridge: StreamBridge) -> Self {
        Bus {
            id: id.into(),
            bridge,
        }
    }

    /// A bus id as Spring Cloud Bus makes one: `<app>:<profiles>:<random>`.
    pub fn id_for(app: &str, profiles: &[String]) -> String {
        let profiles = if profiles.is_empty() {
            "default".to_owned()
        } else {
            profiles.join(",")
        };
        format!("{app}:{profiles}:{:016x}", fastrand::u64(..))
    }

    /// This instance's bus id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bindings the bus uses, added to `settings` where the application has not set
    /// them: `springCloudBus-in-0` and `springCloudBus-out-0` on `springCloudBus`, with no
    /// group.
    pub fn bindings(settings: &mut StreamSettings) {
        for binding in [format!("{CONSUMER}-in-0"), OUTPUT.to_owned()] {
            settings
                .bindings
                .entry(binding)
                .or_insert_with(|| BindingSettings {
                    destination: Some(DESTINATION.to_owned()),
                    ..BindingSettings::default()
                });
        }
    }

    /// Registers the bus's consumer on `builder`: events meant for this instance (not sent
    /// by it, its id matching their destination) go to `listener`, then are acknowledged
    /// on the bus.
    pub fn consume(&self, builder: StreamBuilder, listener: Listener) -> StreamBuilder {
        let bus = self.clone();
        builder.consumer(CONSUMER, move |message: Message<RemoteEvent>| {
            let (bus, listener) = (bus.clone(), listener.clone());
            async move {
                let event = message.payload;
                let Some(head) = event.head() else {
                    return Ok(());
                };
                if head.origin_service == bus.id
                    || matches!(event, RemoteEvent::AckRemoteApplicationEvent { .. })
                    || !service_matches(&head.destination_service, &bus.id)
                {
                    return Ok(());
                }
                if let Some(reason) = event.refused() {
                    // The origin may be what is too long: at most MAX_ID characters of it.
                    let origin: String = head.origin_service.chars().take(MAX_ID).collect();
                    tracing::warn!(%origin, %reason, "bus event refused");
                    return Ok(());
                }
                let ack = bus.ack(&event);
                tracing::info!(origin = %head.origin_service, event = event.class(), "bus event");
                listener(event).await;
                bus.publish(ack).await.map_err(|e| e.to_string())
            }
        })
    }

    fn head(&self, destination: &str) -> EventHead {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        EventHead {
            id: crate::message::random_id(),
            origin_service: self.id.clone(),
            destination_service: destination.to_owned(),
            timestamp,
        }
    }

    fn ack(&self, event: &RemoteEvent) -> RemoteEvent {
        let acked = event.head().cloned().unwrap_or_else(|| self.head("**"));
        RemoteEvent::AckRemoteApplicationEvent {
            head: self.head("**"),
            ack_id: acked.id,
            ack_destination_service: acked.destination_service,
            event: Some(event.class().to_owned()),
        }
    }

    /// A refresh for the instances `destination` matches (`**`: all).
    pub fn refresh_event(&self, destination: &str) -> RemoteEvent {
        RemoteEvent::RefreshRemoteApplicationEvent(self.head(destination))
    }

    /// An environment change for the instances `destination` matches.
    pub fn environment_event(
        &self,
        destination: &str,
        values: BTreeMap<String, String>,
    ) -> RemoteEvent {
        RemoteEvent::EnvironmentChangeRemoteApplicationEvent {
            head: self.head(destination),
            values,
        }
    }

    /// Whether `event` is for this instance too (its sender acts on it without the bus).
    pub fn is_for_self(&self, event: &RemoteEvent) -> bool {
        event
            .head()
            .is_some_and(|head| service_matches(&head.destination_service, &self.id))
    }

    /// Sends `event` to every instance.
    pub async fn publish(&self, event: RemoteEvent) -> Result<(), StreamError> {
        self.bridge.send(OUTPUT, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_spring_clouds_service_matcher() {
        let id = "orders:default:3f2a";
        for yes in [
            "**",
            "orders:**",
            "orders",
            "orders:*",
            "orders:default:3f2a",
            "ord*:**",
            "*:default:*",
        ] {
            assert!(service_matches(yes, id), "{yes}");
        }
        for no in [
            "payments:**",
            "payments",
            "orders:prod:**",
            "orders:default:3f2a:x",
        ] {
            assert!(!service_matches(no, id), "{no}");
        }
        // No destination (Spring's null) is everyone.
        assert!(service_matches("", id));
        // Hostile patterns end quickly.
        assert!(!service_matches(&"**:".repeat(100), id));
        assert!(!service_matches(&"*".repeat(300), id));
        assert!(!service_matches(&format!("{}x", "*".repeat(200)), id));
    }

    #[test]
    fn events_read_and_write_as_spring_cloud_bus_does() {
        let spring = r#"{"type":"RefreshRemoteApplicationEvent","timestamp":1700000000000,
            "originService":"config-server:8888:a1","destinationService":"orders:**",
            "id":"7c1e6c43-2b1e-4bd4-9d7a-0f3f7b0c8a11"}"#;
        let event: RemoteEvent = serde_json::from_str(spring).unwrap();
        let head = event.head().unwrap();
        assert_eq!(head.origin_service, "config-server:8888:a1");
        assert_eq!(head.destination_service, "orders:**");
        let written = serde_json::to_value(&event).unwrap();
        assert_eq!(written["type"], "RefreshRemoteApplicationEvent");
        assert_eq!(written["originService"], "config-server:8888:a1");

        let env = r#"{"type":"EnvironmentChangeRemoteApplicationEvent","timestamp":1,
            "originService":"a","destinationService":"**","id":"x","values":{"shop.banner":"sale"}}"#;
        let RemoteEvent::EnvironmentChangeRemoteApplicationEvent { values, .. } =
            serde_json::from_str(env).unwrap()
        else {
            panic!("an environment change");
        };
        assert_eq!(values["shop.banner"], "sale");

        let custom =
            r#"{"type":"MyOwnRemoteEvent","originService":"a","destinationService":"**","id":"y"}"#;
        assert_eq!(
            serde_json::from_str::<RemoteEvent>(custom).unwrap(),
            RemoteEvent::Other
        );
    }
}
