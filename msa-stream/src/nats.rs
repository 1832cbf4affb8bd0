//! The NATS JetStream binder (feature `nats`), through `async-nats`.
//!
//! - a destination is a stream of the same name holding the subjects `<destination>.>`;
//!   messages go to `<destination>.p.<partition>` (partition 0 when unpartitioned);
//! - a group is a durable pull consumer named after it (one per owned partition when the
//!   input is partitioned: `<group>-p<n>`), starting with the messages sent after it was
//!   made; no group is an ephemeral consumer;
//! - messages are pulled in bounded batches, one pull at a time, so that a consumer that
//!   closes returns what its last pull still brings at once;
//! - acknowledgement is explicit; `redeliver` is a negative acknowledgement with a delay; a
//!   message left unsettled is delivered again after the consumer's ack wait;
//! - dead letters go to `<destination>.dlq.<group>` in the same stream;
//! - the key travels in the `msa-key` header ([`KEY`]), the partition in `scst_partition`
//!   (when partitioned); JSON, the default content type, travels without a header.
//!
//! Destination and group names are letters, digits, `-` and `_`: they become stream,
//! subject and consumer names.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt as _;

use crate::binder::{
    Binder, BinderError, Consumer, ConsumerOptions, Delivery, Producer, ProducerOptions, Settle,
    partition_for,
};
use crate::message::{CONTENT_TYPE, Envelope, Headers, JSON, KEY, PARTITION};

/// A connection to a NATS server with JetStream.
#[derive(Clone, Debug)]
pub struct NatsBinder {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    ack_wait: Duration,
}

fn broker(reason: impl std::fmt::Display) -> BinderError {
    BinderError::broker("nats", reason)
}

/// `name` as a stream, subject or consumer name: letters, digits, `-`, `_`, at most 64.
fn checked(kind: &str, name: &str) -> Result<(), BinderError> {
    crate::binder::check_name("NATS", kind, name, 64, b"-_")
}

impl NatsBinder {
    /// Connects to the server at `url` (`nats://127.0.0.1:4222`).
    pub async fn connect(url: &str) -> Result<Self, BinderError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| broker(format!("{}: {e}", msa_core::secrets::mask_url(url))))?;
        Ok(NatsBinder {
            jetstream: jetstream::new(client.clone()),
            client,
            ack_wait: Duration::from_secs(30),
        })
    }

    /// How long a delivered message may stay unsettled before the server delivers it
    /// again (to any member of the group): 30 s.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    async fn stream(&self, destination: &str) -> Result<stream::Stream, BinderError> {
        checked("destination", destination)?;
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: destination.to_owned(),
                subjects: vec![format!("{destination}.>")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(broker)
    }

    /// The dead letters of `destination` and `group` stored so far, oldest first (for
    /// operators and tests; a consumer of `<destination>.dlq.<group>` sees them too).
    pub async fn dead_letters(
        &self,
        destination: &str,
        group: Option<&str>,
    ) -> Result<Vec<Envelope>, BinderError> {
        let stream = self.stream(destination).await?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: dead_letter_subject(destination, group),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(broker)?;
        let mut batch = consumer
            .fetch()
            .max_messages(10_000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(broker)?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(broker)?;
            out.push(envelope_of(&message));
        }
        Ok(out)
    }
}

/// The durable consumers of `group` for the partitions `options` own.
fn durables(group: &str, options: &ConsumerOptions) -> Vec<String> {
    match options.owned_partitions() {
        Some(owned) => owned.iter().map(|p| format!("{group}-p{p}")).collect(),
        None => vec![group.to_owned()],
    }
}

fn dead_letter_subject(destination: &str, group: Option<&str>) -> String {
    format!("{destination}.dlq.{}", group.unwrap_or("anonymous"))
}

/// Publishes `envelope` to `subject` and waits for the server's acknowledgement (stored).
async fn publish(
    jetstream: &jetstream::Context,
    subject: impl async_nats::subject::ToSubject,
    envelope: Envelope,
) -> Result<(), BinderError> {
    let headers = headers_of(&envelope);
    let acknowledgement = if headers.is_empty() {
        jetstream.publish(subject, envelope.payload).await
    } else {
        jetstream
            .publish_with_headers(subject, headers, envelope.payload)
            .await
    };
    acknowledgement.map_err(broker)?.await.map_err(broker)?;
    Ok(())
}

fn headers_of(envelope: &Envelope) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &envelope.headers {
        // JSON is what a message without a content type holds (Spring's rule too): the
        // header would only add bytes to every message.
        if name == CONTENT_TYPE && value == JSON {
            continue;
        }
        headers.insert(name.as_str(), value.as_str());
    }
    if let Some(key) = &envelope.key {
        headers.insert(KEY, key.as_str());
    }
    if let Some(partition) = envelope.partition {
        headers.insert(PARTITION, partition.to_string().as_str());
    }
    headers
}

fn envelope_of(message: &async_nats::Message) -> Envelope {
    let mut headers = Headers::new();
    let mut key = None;
    let mut partition = None;
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let Some(value) = values.first() else {
                continue;
            };
            match name.as_ref() {
                KEY => key = Some(value.as_str().to_owned()),
                PARTITION => partition = value.as_str().parse().ok(),
                other => {
                    headers.insert(other.to_owned(), value.as_str().to_owned());
                }
            }
        }
    }
    headers
        .entry(CONTENT_TYPE.to_owned())
        .or_insert_with(|| JSON.to_owned());
    Envelope {
        payload: message.payload.clone(),
        headers,
        key,
        partition,
    }
}

struct NatsProducer {
    jetstream: jetstream::Context,
    /// `<destination>.p.<n>` for each partition (subjects are cheap to clone).
    subjects: Vec<async_nats::Subject>,
}

#[async_trait::async_trait]
impl Producer for NatsProducer {
    async fn send(&self, mut envelope: Envelope) -> Result<(), BinderError> {
        let partitions = self.subjects.len();
        let partition = partition_for(&envelope, u32::try_from(partitions).unwrap_or(u32::MAX));
        // The partition header only where there are partitions, as Spring writes it.
        envelope.partition = (partitions > 1).then_some(partition);
        let subject = self.subjects[partition as usize % partitions].clone();
        publish(&self.jetstream, subject, envelope).await
    }
}

/// How long one pull waits for messages before the next pull is made.
const PULL_EXPIRES: Duration = Duration::from_millis(500);

/// Consumes with bounded pulls (`fetch`), so that a closed consumer has no pull left open:
/// what its pulls still bring goes back to the group at once. A partitioned input keeps
/// its order with one pull at a time; otherwise the next pull is asked for when half of
/// the current one is handed out, so fetching keeps ahead of handling (the server may
/// share messages between the two, so their order is not kept, as a group's instances do
/// not keep it either).
struct NatsConsumer {
    /// One durable per owned partition (or one for the whole destination).
    consumers: Vec<consumer::PullConsumer>,
    turn: usize,
    /// Open pulls (at most two), with how many messages each has handed out.
    batches: Vec<(consumer::pull::Batch, u32)>,
    ordered: bool,
    closed: bool,
    prefetch: u32,
}

impl NatsConsumer {
    async fn pull(&mut self) -> Result<consumer::pull::Batch, BinderError> {
        let consumer = &self.consumers[self.turn % self.consumers.len()];
        self.turn = self.turn.wrapping_add(1);
        consumer
            .fetch()
            .max_messages(self.prefetch as usize)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(broker)
    }
}

#[async_trait::async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.closed {
                return None;
            }
            let ahead = match self.batches.as_slice() {
                [] => true,
                [(_, given)] => !self.ordered && *given >= self.prefetch / 2,
                _ => false,
            };
            if ahead {
                match self.pull().await {
                    Ok(batch) => self.batches.push((batch, 0)),
                    Err(error) if self.batches.is_empty() => {
                        tracing::warn!(%error, "NATS pull failed; pulling again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(error) => tracing::debug!(%error, "NATS pull ahead failed"),
                }
            }
            let (at, fetched) = match self.batches.as_mut_slice() {
                [] => continue,
                [(one, _)] => (0, one.next().await),
                [(first, _), (second, _), ..] => tokio::select! {
                    biased;
                    fetched = first.next() => (0, fetched),
                    fetched = second.next() => (1, fetched),
                },
            };
            match fetched {
                Some(Ok(message)) => {
                    self.batches[at].1 += 1;
                    let redelivered = message
                        .info()
                        .map_or(0, |info| u32::try_from(info.delivered - 1).unwrap_or(0));
                    let envelope = envelope_of(&message);
                    return Some(Delivery::new(
                        envelope,
                        redelivered,
                        Box::new(NatsSettle(Some(message))),
                    ));
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "NATS pull ended");
                    self.batches.remove(at);
                }
                None => {
                    self.batches.remove(at);
                }
            }
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        // The open pulls end within their expiry; what they still bring goes back to the
        // group at once rather than after the ack wait.
        for (mut batch, _) in std::mem::take(&mut self.batches) {
            while let Some(fetched) = batch.next().await {
                if let Ok(message) = fetched
                    && let Err(error) = message.ack_with(AckKind::Nak(None)).await
                {
                    tracing::debug!(%error, "returning a fetched message failed; it comes back after the ack wait");
                }
            }
        }
    }
}

struct NatsSettle(Option<jetstream::Message>);

#[async_trait::async_trait]
impl Settle for NatsSettle {
    async fn ack(mut self: Box<Self>) -> Result<(), BinderError> {
        match self.0.take() {
            Some(message) => message.ack().await.map_err(broker),
            None => Ok(()),
        }
    }

    async fn redeliver(mut self: Box<Self>, delay: Duration) -> Result<(), BinderError> {
        match self.0.take() {
            Some(message) => message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(broker),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Binder for NatsBinder {
    fn name(&self) -> &str {
        "nats"
    }

    async fn producer(
        &self,
        destination: &str,
        options: &ProducerOptions,
    ) -> Result<Box<dyn Producer>, BinderError> {
        self.stream(destination).await?;
        let partitions = options.partition_count.unwrap_or(1).max(1);
        Ok(Box::new(NatsProducer {
            jetstream: self.jetstream.clone(),
            subjects: (0..partitions)
                .map(|p| async_nats::Subject::from(format!("{destination}.p.{p}")))
                .collect(),
        }))
    }

    async fn consumer(
        &self,
        destination: &str,
        group: Option<&str>,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        let stream = self.stream(destination).await?;
        if let Some(group) = group {
            checked("group", group)?;
        }
        let owned: Vec<Option<u32>> = match options.owned_partitions() {
            Some(owned) => owned.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut consumers = Vec::new();
        for partition in owned {
            let (filter, durable) = match partition {
                Some(p) => (
                    format!("{destination}.p.{p}"),
                    group.map(|g| format!("{g}-p{p}")),
                ),
                None => (format!("{destination}.p.>"), group.map(str::to_owned)),
            };
            let config = consumer::pull::Config {
                durable_name: durable.clone(),
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                // Two pulls of `prefetch` may be open.
                max_ack_pending: 2 * i64::from(options.prefetch.max(1)),
                inactive_threshold: if durable.is_none() {
                    Duration::from_secs(30)
                } else {
                    Duration::ZERO
                },
                ..Default::default()
            };
            let consumer: consumer::PullConsumer = match &durable {
                Some(name) => stream.get_or_create_consumer(name, config).await,
                None => stream.create_consumer(config).await,
            }
            .map_err(broker)?;
            consumers.push(consumer);
        }
        Ok(Box::new(NatsConsumer {
            consumers,
            turn: 0,
            batches: Vec::with_capacity(2),
            ordered: options.partitioned,
            closed: false,
            prefetch: options.prefetch.max(1),
        }))
    }

    async fn dead_letter(
        &self,
        destination: &str,
        group: Option<&str>,
        envelope: Envelope,
    ) -> Result<(), BinderError> {
        publish(
            &self.jetstream,
            dead_letter_subject(destination, group),
            envelope,
        )
        .await
    }

    async fn lag(
        &self,
        destination: &str,
        group: &str,
        options: &ConsumerOptions,
    ) -> Result<Option<u64>, BinderError> {
        let stream = self.stream(destination).await?;
        let mut pending = 0;
        for durable in durables(group, options) {
            pending += stream
                .consumer_info(&durable)
                .await
                .map_err(broker)?
                .num_pending;
        }
        Ok(Some(pending))
    }

    async fn check(&self) -> Result<(), BinderError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(broker(format!("connection {state:?}"))),
        }
    }
}
