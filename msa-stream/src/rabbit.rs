//! The RabbitMQ binder (feature `rabbit`), through `lapin`, with Spring Cloud Stream's
//! RabbitMQ topology, so msa and Spring services share destinations on one broker:
//!
//! - a destination is a durable **topic exchange** of the same name; producers publish to
//!   it with the destination as routing key (`<destination>-<partition>` when
//!   partitioned), persistent, with the `contentType` header and property;
//! - a group is a durable **queue** `<destination>.<group>` bound with `#` (when
//!   partitioned, one queue `<destination>.<group>-<n>` per owned partition, bound with
//!   `<destination>-<n>`), whose dead-letter exchange is `DLX` with the routing key
//!   `<destination>.<group>`, as Spring's `auto-bind-dlq: true` declares it;
//! - the dead letters go through the direct exchange `DLX` to the durable queue
//!   `<destination>.<group>.dlq`, with the original headers and the failure's
//!   (`x-exception-message`, as Spring's `republish-to-dlq` writes them);
//! - no group is an exclusive, auto-deleted queue `<destination>.anonymous.<unique>`;
//! - acknowledgement is manual, after the handler; `redeliver` returns the message to the
//!   queue after its delay; a message left unsettled by a consumer that goes away returns
//!   to the queue when its channel closes;
//! - the connection recovers by itself (lapin's topology recovery) when the broker
//!   restarts.
//!
//! Destination and group names are letters, digits, `-`, `_`, `.` and `:`, at most 200
//! bytes (AMQP names are at most 255, and the binder adds suffixes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::SelectAll;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::binder::{
    Binder, BinderError, Consumer, ConsumerOptions, Delivery, Producer, ProducerOptions, Settle,
    partition_for,
};
use crate::message::{CONTENT_TYPE, Envelope, Headers, KEY, PARTITION};

/// The dead-letter exchange Spring Cloud Stream's RabbitMQ binder declares.
pub const DEAD_LETTER_EXCHANGE: &str = "DLX";

/// How long [`RabbitBinder::connect`] waits for the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dead letters read at most by [`RabbitBinder::dead_letters`].
const MAX_READ: usize = 10_000;

/// A connection to a RabbitMQ broker.
#[derive(Clone, Debug)]
pub struct RabbitBinder {
    connection: Arc<Connection>,
}

fn broker(reason: impl std::fmt::Display) -> BinderError {
    BinderError::broker("rabbit", reason)
}

/// `name` as part of an exchange, queue or routing key name.
fn checked(kind: &str, name: &str) -> Result<(), BinderError> {
    crate::binder::check_name("RabbitMQ", kind, name, 200, b"-_.:")
}

/// The queue of `group`, or the base of the partitioned queues.
fn group_queue(destination: &str, group: &str) -> String {
    format!("{destination}.{group}")
}

impl RabbitBinder {
    /// Connects to the broker at `url` (`amqp://user:password@127.0.0.1:5672/%2f`;
    /// `amqps://` for TLS), failing when the broker has not answered within 5 s. Once
    /// made, the connection recovers by itself when the broker goes away and returns,
    /// trying every 100 ms to 2 s for about a minute.
    pub async fn connect(url: &str) -> Result<Self, BinderError> {
        let properties = ConnectionProperties::default()
            .with_connection_name("msa-stream".into())
            .enable_auto_recover()
            .configure_backoff(|backoff| {
                backoff
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(40)
            });
        let masked = msa_core::secrets::mask_url(url);
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
                .await
                .map_err(|_| broker(format!("{masked}: no answer within {CONNECT_TIMEOUT:?}")))?
                .map_err(|e| broker(format!("{masked}: {e}")))?;
        Ok(RabbitBinder {
            connection: Arc::new(connection),
        })
    }

    async fn channel(&self) -> Result<Channel, BinderError> {
        self.connection.create_channel().await.map_err(broker)
    }

    /// The dead letters of `destination` and `group` waiting in their queue, oldest first,
    /// left there (for operators and tests; a consumer of `<destination>.<group>.dlq`
    /// takes them).
    pub async fn dead_letters(
        &self,
        destination: &str,
        group: Option<&str>,
    ) -> Result<Vec<Envelope>, BinderError> {
        let channel = self.channel().await?;
        let queue = declare_dead_letters(&channel, destination, group).await?;
        let mut out = Vec::new();
        while out.len() < MAX_READ {
            match channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(broker)?
            {
                Some(message) => out.push(envelope_of(&message.delivery)),
                None => break,
            }
        }
        // Closing the channel returns every message read to the queue, in order.
        let _ = channel.close(200, "OK".into()).await;
        Ok(out)
    }
}

/// Declares `DLX` and the dead-letter queue of `destination` and `group`; returns the
/// queue's name.
async fn declare_dead_letters(
    channel: &Channel,
    destination: &str,
    group: Option<&str>,
) -> Result<String, BinderError> {
    let base = group_queue(destination, group.unwrap_or("anonymous"));
    let queue = format!("{base}.dlq");
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    channel
        .queue_bind(
            queue.as_str().into(),
            DEAD_LETTER_EXCHANGE.into(),
            base.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    Ok(queue)
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn declare_exchange(channel: &Channel, destination: &str) -> Result<(), BinderError> {
    checked("destination", destination)?;
    channel
        .exchange_declare(
            destination.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)
}

/// Publishes `envelope` and waits for the broker's confirmation.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    envelope: &Envelope,
) -> Result<(), BinderError> {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &envelope.payload,
            properties_of(envelope)?,
        )
        .await
        .map_err(broker)?
        .await
        .map_err(broker)?;
    if confirmation.is_nack() {
        return Err(broker(format!(
            "the broker refused a message for {exchange:?}"
        )));
    }
    Ok(())
}

fn properties_of(envelope: &Envelope) -> Result<BasicProperties, BinderError> {
    let name = |name: &str| {
        ShortString::try_new(name)
            .map_err(|_| BinderError::Invalid(format!("a header name of {} bytes", name.len())))
    };
    let mut headers = FieldTable::default();
    for (header, value) in &envelope.headers {
        headers.insert(
            name(header)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    if let Some(key) = &envelope.key {
        headers.insert(KEY.into(), AMQPValue::LongString(key.as_bytes().into()));
    }
    if let Some(partition) = envelope.partition {
        headers.insert(
            PARTITION.into(),
            AMQPValue::LongInt(i32::try_from(partition).unwrap_or(i32::MAX)),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(content_type) = envelope.headers.get(CONTENT_TYPE)
        && let Ok(content_type) = ShortString::try_new(content_type.as_str())
    {
        properties = properties.with_content_type(content_type);
    }
    Ok(properties)
}

/// A header value as text: strings, numbers and booleans (Spring writes all three);
/// other kinds are left out.
fn text_of(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

fn envelope_of(delivery: &lapin::message::Delivery) -> Envelope {
    let mut headers = Headers::new();
    let mut key = None;
    let mut partition = None;
    if let Some(table) = delivery.properties.headers() {
        for (name, value) in table {
            let Some(value) = text_of(value) else {
                continue;
            };
            match name.as_str() {
                KEY => key = Some(value),
                PARTITION => partition = value.parse().ok(),
                other => {
                    headers.insert(other.to_owned(), value);
                }
            }
        }
    }
    if !headers.contains_key(CONTENT_TYPE)
        && let Some(content_type) = delivery.properties.content_type()
    {
        headers.insert(CONTENT_TYPE.to_owned(), content_type.as_str().to_owned());
    }
    Envelope {
        payload: delivery.data.clone().into(),
        headers,
        key,
        partition,
    }
}

struct RabbitProducer {
    channel: Channel,
    destination: String,
    partitions: u32,
}

#[async_trait::async_trait]
impl Producer for RabbitProducer {
    async fn send(&self, mut envelope: Envelope) -> Result<(), BinderError> {
        let routing_key = if self.partitions > 1 {
            let partition = partition_for(&envelope, self.partitions);
            envelope.partition = Some(partition);
            format!("{}-{partition}", self.destination)
        } else {
            self.destination.clone()
        };
        publish(&self.channel, &self.destination, &routing_key, &envelope).await
    }
}

/// A name no other consumer has: the process, the time and a counter.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

struct RabbitConsumer {
    channel: Channel,
    tags: Vec<String>,
    deliveries: SelectAll<lapin::Consumer>,
    closed: bool,
}

fn delivery_of(delivery: lapin::message::Delivery) -> Delivery {
    let envelope = envelope_of(&delivery);
    Delivery::new(
        envelope,
        u32::from(delivery.redelivered),
        Box::new(RabbitSettle(delivery.acker)),
    )
}

#[async_trait::async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        while !self.closed {
            match self.deliveries.next().await {
                Some(Ok(delivery)) => return Some(delivery_of(delivery)),
                Some(Err(error)) => {
                    // The connection went away: wait for lapin to recover it (and its
                    // queues, bindings and consumers), then go on.
                    if let Err(error) = self.channel.wait_for_recovery(error).await {
                        tracing::warn!(%error, "RabbitMQ consumer lost; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                None => return None,
            }
        }
        None
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for tag in &self.tags {
            if let Err(error) = self
                .channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
            {
                tracing::debug!(%error, "cancelling a RabbitMQ consumer failed");
            }
        }
        // What was delivered and not handed out goes back to the queue at once.
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_secs(1), self.deliveries.next()).await
        {
            if let Ok(delivery) = delivery {
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        // Closing the channel returns what is unsettled to the queue.
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "OK".into()).await;
            });
        }
    }
}

struct RabbitSettle(lapin::Acker);

#[async_trait::async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> Result<(), BinderError> {
        self.0
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(broker)
    }

    async fn redeliver(self: Box<Self>, delay: Duration) -> Result<(), BinderError> {
        // AMQP has no delayed return: the message stays with this consumer for `delay`,
        // then goes back to the queue.
        let acker = self.0;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            if let Err(error) = acker.nack(requeue).await {
                tracing::debug!(%error, "returning a message failed; the channel's close returns it");
            }
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binder for RabbitBinder {
    fn name(&self) -> &str {
        "rabbit"
    }

    async fn producer(
        &self,
        destination: &str,
        options: &ProducerOptions,
    ) -> Result<Box<dyn Producer>, BinderError> {
        let channel = self.channel().await?;
        declare_exchange(&channel, destination).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker)?;
        Ok(Box::new(RabbitProducer {
            channel,
            destination: destination.to_owned(),
            partitions: options.partition_count.unwrap_or(1).max(1),
        }))
    }

    async fn consumer(
        &self,
        destination: &str,
        group: Option<&str>,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let channel = self.channel().await?;
        declare_exchange(&channel, destination).await?;
        // (queue, routing key) per owned partition, or one for the destination.
        let mut queues: Vec<(String, String)> = Vec::new();
        let mut arguments = FieldTable::default();
        let queue_options = match group {
            Some(group) => {
                checked("group", group)?;
                let base = group_queue(destination, group);
                declare_dead_letters(&channel, destination, Some(group)).await?;
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
                );
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(base.as_str().into()),
                );
                match options.owned_partitions() {
                    Some(owned) => queues.extend(
                        owned
                            .iter()
                            .map(|p| (format!("{base}-{p}"), format!("{destination}-{p}"))),
                    ),
                    None => queues.push((base, "#".to_owned())),
                }
                QueueDeclareOptions::durable()
            }
            None => {
                queues.push((
                    format!("{destination}.anonymous.{}", unique()),
                    "#".to_owned(),
                ));
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                }
            }
        };
        let prefetch = u16::try_from(options.prefetch.max(1)).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(broker)?;
        let mut deliveries = SelectAll::new();
        let mut tags = Vec::new();
        for (queue, routing_key) in queues {
            channel
                .queue_declare(queue.as_str().into(), queue_options, arguments.clone())
                .await
                .map_err(broker)?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    destination.into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            let tag = format!("msa-{}", unique());
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            tags.push(tag);
            deliveries.push(consumer);
        }
        Ok(Box::new(RabbitConsumer {
            channel,
            tags,
            deliveries,
            closed: false,
        }))
    }

    async fn dead_letter(
        &self,
        destination: &str,
        group: Option<&str>,
        envelope: Envelope,
    ) -> Result<(), BinderError> {
        checked("destination", destination)?;
        let channel = self.channel().await?;
        declare_dead_letters(&channel, destination, group).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker)?;
        let routing_key = group_queue(destination, group.unwrap_or("anonymous"));
        let mut envelope = envelope;
        envelope
            .headers
            .insert("x-original-exchange".to_owned(), destination.to_owned());
        let result = publish(&channel, DEAD_LETTER_EXCHANGE, &routing_key, &envelope).await;
        let _ = channel.close(200, "OK".into()).await;
        result
    }

    async fn lag(
        &self,
        destination: &str,
        group: &str,
        options: &ConsumerOptions,
    ) -> Result<Option<u64>, BinderError> {
        let base = group_queue(destination, group);
        let queues: Vec<String> = match options.owned_partitions() {
            Some(owned) => owned.iter().map(|p| format!("{base}-{p}")).collect(),
            None => vec![base],
        };
        let channel = self.channel().await?;
        let mut ready = 0;
        for queue in queues {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ready += u64::from(
                channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                    .map_err(broker)?
                    .message_count(),
            );
        }
        let _ = channel.close(200, "OK".into()).await;
        Ok(Some(ready))
    }

    async fn check(&self) -> Result<(), BinderError> {
        let status = self.connection.status();
        if status.blocked() {
            Err(broker("blocked by the broker (a resource alarm)"))
        } else if status.connected() {
            Ok(())
        } else if status.reconnecting() {
            Err(broker("reconnecting"))
        } else {
            Err(broker("not connected"))
        }
    }
}
