//! The in-process binder: the default, with no broker to install, and the same semantics
//! as the broker binders — groups, partitions, acknowledgements, redelivery of what a
//! consumer left unsettled, dead letters — so tests and examples run anywhere. It lives
//! inside one process: services in different processes need a broker binder.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::binder::{
    Binder, BinderError, Consumer, ConsumerOptions, Delivery, Producer, ProducerOptions, Settle,
    partition_for,
};
use crate::message::Envelope;

/// Messages one group's partition holds at most; a send past it fails (backpressure), as a
/// full broker queue would refuse it.
pub const MAX_QUEUED: usize = 100_000;

/// Dead letters kept per dead-letter destination; older ones are dropped past it (logged).
pub const MAX_DEAD_LETTERS: usize = 10_000;

/// One waiting message and how often it was delivered before.
type Queued = (Envelope, u32);

#[derive(Debug, Default)]
struct Group {
    /// One queue per partition (one for an unpartitioned destination).
    partitions: Vec<VecDeque<Queued>>,
    /// Anonymous subscriptions go when their consumer does.
    anonymous: bool,
    consumers: usize,
    /// Consumers waiting for a message with room for one.
    idle: usize,
    /// The consumer that took the last message: it lets an idle one take the next, so
    /// that a group's instances share the messages as a broker's would.
    last: u64,
}

#[derive(Debug, Default)]
struct Topic {
    groups: BTreeMap<String, Group>,
    partitions: u32,
}

#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    dead: BTreeMap<String, VecDeque<Envelope>>,
    next_anonymous: u64,
    next_consumer: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change a waiting consumer may care about.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        msa_core::sync::lock(&self.state)
    }
}

/// The in-process binder; clones share their destinations.
///
/// # Examples
///
/// ```
/// use msa_stream::binder::{Binder, ConsumerOptions, ProducerOptions};
/// use msa_stream::memory::MemoryBinder;
/// use msa_stream::message::Envelope;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), msa_stream::binder::BinderError> {
/// let binder = MemoryBinder::new();
/// let mut consumer = binder.consumer("orders", Some("billing"), &ConsumerOptions::default()).await?;
/// binder.producer("orders", &ProducerOptions::default()).await?
///     .send(Envelope::new(r#"{"id":1}"#)).await?;
/// let delivery = consumer.next().await.unwrap();
/// assert_eq!(&delivery.envelope.payload[..], br#"{"id":1}"#);
/// delivery.ack().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBinder {
    shared: Arc<Shared>,
}

impl MemoryBinder {
    /// A binder with no destinations yet.
    pub fn new() -> Self {
        MemoryBinder::default()
    }

    /// The process's binder: every app in the process that uses it shares its
    /// destinations (what `msa::App` binds to when no broker is configured).
    pub fn shared() -> Self {
        static SHARED: std::sync::OnceLock<MemoryBinder> = std::sync::OnceLock::new();
        SHARED.get_or_init(MemoryBinder::new).clone()
    }

    /// The dead letters of `destination` and `group`, oldest first.
    pub fn dead_letters(&self, destination: &str, group: Option<&str>) -> Vec<Envelope> {
        self.shared
            .lock()
            .dead
            .get(&dead_letter_name(destination, group))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Messages waiting for `group` of `destination` (not yet handed to a consumer).
    pub fn waiting(&self, destination: &str, group: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(destination)
            .and_then(|t| t.groups.get(group))
            .map_or(0, |g| g.partitions.iter().map(VecDeque::len).sum())
    }
}

/// RabbitMQ's dead-letter queue name: `<destination>.<group>.dlq`.
fn dead_letter_name(destination: &str, group: Option<&str>) -> String {
    format!("{destination}.{}.dlq", group.unwrap_or("anonymous"))
}

struct MemoryProducer {
    shared: Arc<Shared>,
    destination: String,
    partitions: u32,
}

#[async_trait::async_trait]
impl Producer for MemoryProducer {
    async fn send(&self, envelope: Envelope) -> Result<(), BinderError> {
        let mut state = self.shared.lock();
        let topic = state.topics.entry(self.destination.clone()).or_default();
        topic.partitions = topic.partitions.max(self.partitions).max(1);
        let partition = partition_for(&envelope, self.partitions);
        let count = topic.partitions as usize;
        for (name, group) in &mut topic.groups {
            if group.partitions.len() < count {
                group.partitions.resize_with(count, VecDeque::new);
            }
            let queue = &mut group.partitions[partition as usize % count];
            if queue.len() >= MAX_QUEUED {
                return Err(BinderError::Broker {
                    binder: "memory".into(),
                    reason: format!(
                        "group {name} of {} holds {MAX_QUEUED} unconsumed messages",
                        self.destination
                    ),
                });
            }
            let mut copy = envelope.clone();
            copy.partition = Some(partition);
            queue.push_back((copy, 0));
        }
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

struct MemoryConsumer {
    id: u64,
    /// Whether the group had other consumers at the last take: then each `next` lets them
    /// run first, so that one instance does not take every message before another starts.
    shared_group: bool,
    shared: Arc<Shared>,
    destination: String,
    group: String,
    options: ConsumerOptions,
    in_flight: Arc<std::sync::atomic::AtomicU32>,
    closed: bool,
    /// Where the next search starts, so that partitions take turns.
    next: usize,
}

impl MemoryConsumer {
    fn owns(&self, partition: usize) -> bool {
        self.options
            .owns(u32::try_from(partition).unwrap_or(u32::MAX))
    }

    fn take(&mut self) -> Option<Queued> {
        let mut state = self.shared.lock();
        let group = state
            .topics
            .get_mut(&self.destination)?
            .groups
            .get_mut(&self.group)?;
        self.shared_group = !self.options.partitioned && group.consumers > 1;
        // Turns among an unpartitioned group's instances (a partition has one owner).
        if self.shared_group && group.idle > 0 && group.last == self.id {
            return None;
        }
        let count = group.partitions.len();
        for offset in 0..count {
            let partition = (self.next + offset) % count;
            if !self.owns(partition) {
                continue;
            }
            if let Some(queued) = group.partitions[partition].pop_front() {
                self.next = partition + 1;
                group.last = self.id;
                return Some(queued);
            }
        }
        None
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(topic) = state.topics.get_mut(&self.destination)
            && let Some(group) = topic.groups.get_mut(&self.group)
        {
            group.consumers = group.consumers.saturating_sub(1);
            if group.anonymous && group.consumers == 0 {
                topic.groups.remove(&self.group);
            }
        }
    }
}

#[async_trait::async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        use std::sync::atomic::Ordering;
        if self.shared_group {
            tokio::task::yield_now().await;
        }
        loop {
            if self.closed {
                return None;
            }
            let shared = self.shared.clone();
            let changed = shared.changed.notified();
            if self.in_flight.load(Ordering::Acquire) < self.options.prefetch.max(1)
                && let Some((envelope, redelivered)) = self.take()
            {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                let settle = MemorySettle {
                    shared: self.shared.clone(),
                    destination: self.destination.clone(),
                    group: self.group.clone(),
                    envelope: Some(envelope.clone()),
                    redelivered,
                    in_flight: self.in_flight.clone(),
                };
                // In a shared group, whoever this one left the next message for may take
                // it now (alone, nobody waits on this consumer's turn: no wake-up).
                if self.shared_group {
                    shared.changed.notify_waiters();
                }
                return Some(Delivery::new(envelope, redelivered, Box::new(settle)));
            }
            let _idle = (self.in_flight.load(Ordering::Acquire) < self.options.prefetch.max(1))
                .then(|| Idle::new(&shared, &self.destination, &self.group));
            changed.await;
        }
    }

    async fn close(&mut self) {
        self.closed = true;
    }
}

/// A consumer counted as idle in its group while it waits with room for a message (and no
/// longer once the wait ends or is dropped).
struct Idle<'a> {
    shared: &'a Shared,
    destination: &'a str,
    group: &'a str,
}

impl<'a> Idle<'a> {
    fn new(shared: &'a Shared, destination: &'a str, group: &'a str) -> Self {
        Self::count(shared, destination, group, true);
        Idle {
            shared,
            destination,
            group,
        }
    }

    fn count(shared: &Shared, destination: &str, group: &str, more: bool) {
        let mut state = shared.lock();
        if let Some(group) = state
            .topics
            .get_mut(destination)
            .and_then(|t| t.groups.get_mut(group))
        {
            group.idle = if more {
                group.idle + 1
            } else {
                group.idle.saturating_sub(1)
            };
        }
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        Self::count(self.shared, self.destination, self.group, false);
    }
}

/// Settles one delivery; unsettled, it goes back to the front of its partition.
struct MemorySettle {
    shared: Arc<Shared>,
    destination: String,
    group: String,
    envelope: Option<Envelope>,
    redelivered: u32,
    in_flight: Arc<std::sync::atomic::AtomicU32>,
}

impl MemorySettle {
    fn requeue(
        shared: &Shared,
        destination: &str,
        group: &str,
        envelope: Envelope,
        redelivered: u32,
    ) {
        let mut state = shared.lock();
        if let Some(group) = state
            .topics
            .get_mut(destination)
            .and_then(|t| t.groups.get_mut(group))
        {
            let partition = envelope.partition.unwrap_or(0) as usize;
            if let Some(queue) = group.partitions.get_mut(partition) {
                queue.push_front((envelope, redelivered + 1));
            }
        }
        drop(state);
        shared.changed.notify_waiters();
    }

    fn settled(&mut self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.shared.changed.notify_waiters();
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if let Some(envelope) = self.envelope.take() {
            Self::requeue(
                &self.shared,
                &self.destination,
                &self.group,
                envelope,
                self.redelivered,
            );
            self.settled();
        }
    }
}

#[async_trait::async_trait]
impl Settle for MemorySettle {
    async fn ack(mut self: Box<Self>) -> Result<(), BinderError> {
        self.envelope = None;
        self.settled();
        Ok(())
    }

    async fn redeliver(mut self: Box<Self>, delay: Duration) -> Result<(), BinderError> {
        let Some(envelope) = self.envelope.take() else {
            return Ok(());
        };
        self.settled();
        let (shared, destination, group, redelivered) = (
            self.shared.clone(),
            self.destination.clone(),
            self.group.clone(),
            self.redelivered,
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            MemorySettle::requeue(&shared, &destination, &group, envelope, redelivered);
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binder for MemoryBinder {
    fn name(&self) -> &str {
        "memory"
    }

    async fn producer(
        &self,
        destination: &str,
        options: &ProducerOptions,
    ) -> Result<Box<dyn Producer>, BinderError> {
        Ok(Box::new(MemoryProducer {
            shared: self.shared.clone(),
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
        let mut state = self.shared.lock();
        let name = match group {
            Some(group) => group.to_owned(),
            None => {
                state.next_anonymous += 1;
                format!("anonymous.{}", state.next_anonymous)
            }
        };
        let topic = state.topics.entry(destination.to_owned()).or_default();
        topic.partitions = topic
            .partitions
            .max(if options.partitioned {
                options.partition_count
            } else {
                1
            })
            .max(1);
        let count = topic.partitions as usize;
        let entry = topic.groups.entry(name.clone()).or_insert_with(|| Group {
            anonymous: group.is_none(),
            ..Group::default()
        });
        if entry.partitions.len() < count {
            entry.partitions.resize_with(count, VecDeque::new);
        }
        entry.consumers += 1;
        state.next_consumer += 1;
        let id = state.next_consumer;
        drop(state);
        Ok(Box::new(MemoryConsumer {
            id,
            shared_group: false,
            shared: self.shared.clone(),
            destination: destination.to_owned(),
            group: name,
            options: options.clone(),
            in_flight: Arc::default(),
            closed: false,
            next: 0,
        }))
    }

    async fn dead_letter(
        &self,
        destination: &str,
        group: Option<&str>,
        envelope: Envelope,
    ) -> Result<(), BinderError> {
        let name = dead_letter_name(destination, group);
        let mut state = self.shared.lock();
        let queue = state.dead.entry(name.clone()).or_default();
        if queue.len() >= MAX_DEAD_LETTERS {
            queue.pop_front();
            tracing::warn!(queue = %name, "{MAX_DEAD_LETTERS} dead letters kept; the oldest dropped");
        }
        queue.push_back(envelope);
        Ok(())
    }

    async fn check(&self) -> Result<(), BinderError> {
        Ok(())
    }

    async fn lag(
        &self,
        destination: &str,
        group: &str,
        options: &ConsumerOptions,
    ) -> Result<Option<u64>, BinderError> {
        let state = self.shared.lock();
        let Some(group) = state
            .topics
            .get(destination)
            .and_then(|t| t.groups.get(group))
        else {
            return Ok(None);
        };
        let waiting: usize = group
            .partitions
            .iter()
            .enumerate()
            .filter(|(p, _)| options.owns(u32::try_from(*p).unwrap_or(u32::MAX)))
            .map(|(_, queue)| queue.len())
            .sum();
        Ok(Some(waiting as u64))
    }
}
