//! The binder model: a [`Binder`] connects an app to one broker, a producer sends to a
//! destination, and a consumer receives a destination's messages as one member of a group.
//!
//! The trait speaks only of destinations, groups, partitions, keys, acknowledgements and
//! dead letters, which every broker msa binds to has in some form: a Kafka topic and
//! consumer group, a NATS JetStream stream and durable consumer, a RabbitMQ exchange and
//! queue.

use std::fmt;
use std::time::Duration;

use crate::message::Envelope;

impl BinderError {
    /// A failure of the broker behind `binder`.
    pub fn broker(binder: &str, reason: impl fmt::Display) -> Self {
        BinderError::Broker {
            binder: binder.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BinderError {
    /// The broker cannot be reached or refused the operation.
    #[error("{binder}: {reason}")]
    Broker {
        /// The binder's name.
        binder: String,
        /// What went wrong.
        reason: String,
    },
    /// The binder is closed.
    #[error("the binder is closed")]
    Closed,
    /// A name or setting the broker cannot take.
    #[error("{0}")]
    Invalid(String),
}

/// How a producer sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerOptions {
    /// Partitions of the destination (`producer.partition-count`); `None` or 1: none.
    pub partition_count: Option<u32>,
}

/// How a consumer receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Messages handed out and not yet settled, at most (per consumer instance).
    pub prefetch: u32,
    /// Whether the destination is partitioned, and which partitions this instance owns:
    /// those `p` with `p % instance_count == instance_index`.
    pub partitioned: bool,
    /// This instance's index among the group's instances.
    pub instance_index: u32,
    /// How many instances the group has.
    pub instance_count: u32,
    /// Partitions of the destination (when partitioned).
    pub partition_count: u32,
}

impl ConsumerOptions {
    /// Whether this instance owns `partition` (every one, when unpartitioned).
    pub fn owns(&self, partition: u32) -> bool {
        !self.partitioned || partition % self.instance_count.max(1) == self.instance_index
    }

    /// The partitions this instance owns when partitioned; `None` when it consumes the
    /// whole destination.
    pub fn owned_partitions(&self) -> Option<Vec<u32>> {
        self.partitioned.then(|| {
            (0..self.partition_count.max(1))
                .filter(|&p| self.owns(p))
                .collect()
        })
    }
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            prefetch: 64,
            partitioned: false,
            instance_index: 0,
            instance_count: 1,
            partition_count: 1,
        }
    }
}

/// A connection to one broker.
#[async_trait::async_trait]
pub trait Binder: fmt::Debug + Send + Sync + 'static {
    /// The binder's name (`memory`, `nats`, `rabbit`).
    fn name(&self) -> &str;

    /// A producer for `destination`.
    async fn producer(
        &self,
        destination: &str,
        options: &ProducerOptions,
    ) -> Result<Box<dyn Producer>, BinderError>;

    /// A consumer of `destination` in `group`: every group receives each message once, and
    /// the group's consumers share them. Without a group, an anonymous subscription that
    /// receives what is sent while it exists.
    async fn consumer(
        &self,
        destination: &str,
        group: Option<&str>,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn Consumer>, BinderError>;

    /// Sends `envelope` to the dead-letter destination of `destination` and `group`
    /// (RabbitMQ's `<destination>.<group>.dlq`, Kafka's `error.<destination>.<group>`).
    async fn dead_letter(
        &self,
        destination: &str,
        group: Option<&str>,
        envelope: Envelope,
    ) -> Result<(), BinderError>;

    /// Whether the broker answers, for `/actuator/health`.
    async fn check(&self) -> Result<(), BinderError>;

    /// The consumer lag of `group` on `destination` where the broker reports it: messages
    /// waiting for the group (in the partitions `options` own), not yet delivered.
    async fn lag(
        &self,
        destination: &str,
        group: &str,
        options: &ConsumerOptions,
    ) -> Result<Option<u64>, BinderError> {
        let _ = (destination, group, options);
        Ok(None)
    }
}

/// Sends to one destination.
#[async_trait::async_trait]
pub trait Producer: Send + Sync {
    /// Sends `envelope`; returns once the broker has it (persisted, where it persists).
    async fn send(&self, envelope: Envelope) -> Result<(), BinderError>;
}

/// Receives one destination's messages for one member of a group.
#[async_trait::async_trait]
pub trait Consumer: Send {
    /// The next message, or `None` once the consumer is closed.
    async fn next(&mut self) -> Option<Delivery>;

    /// Stops fetching: what was fetched can still be settled; `next` then returns `None`.
    async fn close(&mut self);
}

/// A received message, to be settled exactly once with [`ack`](Self::ack) or
/// [`redeliver`](Self::redeliver). Dropped unsettled, the broker redelivers it (to this
/// group's other members, when this one has gone).
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// How many times the broker has delivered it before (0 the first time).
    pub redelivered: u32,
    settle: Box<dyn Settle>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// How a binder settles one delivery.
#[async_trait::async_trait]
pub trait Settle: Send {
    /// Done with: the broker forgets it.
    async fn ack(self: Box<Self>) -> Result<(), BinderError>;
    /// Deliver it again after `delay` (to any member of the group).
    async fn redeliver(self: Box<Self>, delay: Duration) -> Result<(), BinderError>;
}

impl Delivery {
    /// A delivery settled through `settle`.
    pub fn new(envelope: Envelope, redelivered: u32, settle: Box<dyn Settle>) -> Self {
        Delivery {
            envelope,
            redelivered,
            settle,
        }
    }

    /// Acknowledges the message.
    pub async fn ack(self) -> Result<(), BinderError> {
        self.settle.ack().await
    }

    /// Asks for the message again after `delay`.
    pub async fn redeliver(self, delay: Duration) -> Result<(), BinderError> {
        self.settle.redeliver(delay).await
    }
}

/// Checks `name` (a destination or group, by `kind`) as `broker` takes names: 1 to `max`
/// bytes of ASCII letters, digits and the bytes in `allowed`.
#[cfg_attr(not(any(feature = "nats", feature = "rabbit")), allow(dead_code))]
pub(crate) fn check_name(
    broker: &str,
    kind: &str,
    name: &str,
    max: usize,
    allowed: &[u8],
) -> Result<(), BinderError> {
    let valid = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || allowed.contains(&b));
    if valid {
        return Ok(());
    }
    let allowed: Vec<String> = allowed
        .iter()
        .map(|b| format!("'{}'", char::from(*b)))
        .collect();
    Err(BinderError::Invalid(format!(
        "{kind} {name:?}: {broker} names are 1 to {max} letters, digits or {}",
        allowed.join(", ")
    )))
}

/// The partition of `key` among `count` partitions: a stable hash (FNV-1a), the same in
/// every process and version.
pub fn partition_of(key: &str, count: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % count.max(1)
}

/// The partition `envelope` goes to among `partitions`: the one it names, else its key's,
/// else 0.
pub fn partition_for(envelope: &crate::message::Envelope, partitions: u32) -> u32 {
    match (envelope.partition, &envelope.key) {
        (Some(partition), _) => partition,
        (None, Some(key)) if partitions > 1 => partition_of(key, partitions),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_broker_cannot_take_are_refused_with_the_rule() {
        assert!(check_name("NATS", "destination", "orders-v2_eu", 64, b"-_").is_ok());
        for bad in ["", "orders.eu", "orders >", "ördërs", &"x".repeat(65)] {
            let error = check_name("NATS", "destination", bad, 64, b"-_")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("NATS names are 1 to 64 letters, digits or '-', '_'"),
                "{error}"
            );
        }
        assert!(check_name("RabbitMQ", "group", "orders.eu:1", 200, b"-_.:").is_ok());
    }

    #[test]
    fn a_key_always_has_the_same_partition() {
        assert_eq!(partition_of("order-1", 4), partition_of("order-1", 4));
        assert!(partition_of("order-2", 4) < 4);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| partition_of(&format!("k{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
