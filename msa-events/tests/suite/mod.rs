//! What msa-events promises, run against each database (`sqlite.rs`, `postgres.rs`): every
//! case takes the URL of a new, empty database.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use msa_events::event_store::{Position, RecordedEvent};
use msa_events::outbox::Relay;
use msa_events::projection::{Projection, Projector};
use msa_events::{Aggregate, Error, EventStore, Store, Tx};
use msa_stream::binder::{
    Binder, BinderError, Consumer, ConsumerOptions, Producer, ProducerOptions,
};
use msa_stream::config::StreamSettings;
use msa_stream::memory::MemoryBinder;
use msa_stream::message::{Envelope, MESSAGE_ID, Message};
use msa_stream::stream::{Stream, StreamBridge, StreamBuilder};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// A test aggregate.

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub balance: i64,
    pub movements: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

#[derive(Clone, Debug)]
pub enum Command {
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: {0} available")]
pub struct Insufficient(i64);

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    // Version 1 of `Deposited` named its field `amt`.
    const EVENT_VERSION: u32 = 2;
    type Command = Command;
    type Event = AccountEvent;
    type Error = Insufficient;

    fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, Insufficient> {
        match command {
            Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            Command::Withdraw(amount) if amount > self.balance => Err(Insufficient(self.balance)),
            Command::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
        self.movements += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A stream on `binder` whose group `g` of `destination` hands every envelope to the
/// returned channel.
async fn consume(
    binder: Arc<dyn Binder>,
    destination: &str,
) -> (Stream, mpsc::UnboundedReceiver<Message<serde_json::Value>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let settings: StreamSettings = serde_json::from_value(json!({
        "bindings": { "sink-in-0": { "destination": destination, "group": "g" } }
    }))
    .unwrap();
    let stream = StreamBuilder::on(binder, settings)
        .consumer("sink", move |message: Message<serde_json::Value>| {
            let tx = tx.clone();
            async move { tx.send(message).map_err(|e| e.to_string()) }
        })
        .start()
        .await
        .unwrap();
    (stream, rx)
}

/// A bridge connected to a stream on `binder` with no inputs.
async fn bridge(binder: Arc<dyn Binder>) -> StreamBridge {
    let bridge = StreamBridge::new();
    bridge.connect(
        StreamBuilder::on(binder, StreamSettings::default())
            .start()
            .await
            .unwrap(),
    );
    bridge
}

async fn recv(
    rx: &mut mpsc::UnboundedReceiver<Message<serde_json::Value>>,
) -> Message<serde_json::Value> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message within 20 s")
        .expect("the channel is open")
}

/// Writes `n` messages `{"seq": from..from+n}` to the outbox, one transaction each, keyed
/// `k<seq % 4>`; every fifth transaction also writes a message and rolls back.
async fn write_messages(store: &Store, from: u64, n: u64) {
    for seq in from..from + n {
        if seq % 5 == 0 {
            let mut tx = store.begin().await.unwrap();
            tx.send("events", Message::new(json!({ "seq": -1 })))
                .await
                .unwrap();
            tx.rollback().await.unwrap();
        }
        let mut tx = store.begin().await.unwrap();
        tx.send(
            "events",
            Message::new(json!({ "seq": seq })).with_key(format!("k{}", seq % 4)),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn outbox_rows(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM msa_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// A child process: this test binary running one ignored test, killed with SIGKILL.

/// This test binary running the ignored test `test` with `env` set, whose lines starting
/// `msa-child: ` are heard; killed (SIGKILL) when dropped, however the test ends.
struct ChildProcess {
    child: std::process::Child,
    heard: std::sync::mpsc::Receiver<String>,
}

impl ChildProcess {
    fn start(test: &str, env: (&str, &str)) -> ChildProcess {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (said, heard) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // libtest's "test name ... " may start the line.
                if let Some((_, said_it)) = line.split_once("msa-child: ") {
                    let _ = said.send(said_it.to_owned());
                }
            }
        });
        ChildProcess { child, heard }
    }

    /// Waits (30 s at most) for the child to say `what`.
    fn hear(&self, what: &str) {
        let line = self
            .heard
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the child never said {what:?}"));
        assert_eq!(line, what);
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The outbox.

/// Committed messages are published in the order they were written, each once while
/// nothing fails, and rolled-back ones never; the outbox is empty afterwards.
pub async fn the_relay_publishes_committed_messages_in_order(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder: Arc<dyn Binder> = Arc::new(MemoryBinder::new());
    let (_consumer, mut rx) = consume(binder.clone(), "events").await;
    write_messages(&store, 0, 150).await;
    let relay = Relay::new(store.clone(), bridge(binder).await)
        .batch(40)
        .spawn();
    for seq in 0..150 {
        let message = recv(&mut rx).await;
        assert_eq!(message.payload["seq"], seq, "in order");
        assert!(message.headers.contains_key(MESSAGE_ID));
        assert_eq!(
            message.key.as_deref(),
            Some(format!("k{}", seq % 4).as_str())
        );
    }
    // Written while the relay runs: woken by the commit.
    write_messages(&store, 150, 10).await;
    for seq in 150..160 {
        assert_eq!(recv(&mut rx).await.payload["seq"], seq);
    }
    relay.stop().await;
    assert_eq!(outbox_rows(&store).await, 0);
    assert!(rx.try_recv().is_err(), "nothing published twice");
}

/// Two relays on one outbox: every message published once, in order.
pub async fn several_relays_publish_each_message_once(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder: Arc<dyn Binder> = Arc::new(MemoryBinder::new());
    let (_consumer, mut rx) = consume(binder.clone(), "events").await;
    let bridge = bridge(binder).await;
    let relays: Vec<_> = (0..2)
        .map(|_| Relay::new(store.clone(), bridge.clone()).batch(7).spawn())
        .collect();
    write_messages(&store, 0, 120).await;
    for seq in 0..120 {
        assert_eq!(recv(&mut rx).await.payload["seq"], seq);
    }
    for relay in relays {
        relay.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "nothing published twice");
    assert_eq!(outbox_rows(&store).await, 0);
}

/// The environment variable that makes the `relay_child` test run [`relay_until_killed`]:
/// `<database URL> <NATS URL>`.
pub const CHILD: &str = "MSA_TEST_RELAY_CHILD";

/// How many messages the child publishes before it stalls mid-batch.
const BEFORE_STALL: usize = 25;

/// A binder that passes sends to the real one until `before_stall` have gone, then never
/// completes another: the fault (a relay stopped between publishing and recording) that
/// a SIGKILL then makes final.
#[derive(Debug)]
struct StallAfter<B> {
    inner: B,
    sent: Arc<AtomicUsize>,
    before_stall: usize,
}

struct StallingProducer {
    inner: Box<dyn Producer>,
    sent: Arc<AtomicUsize>,
    before_stall: usize,
}

#[async_trait::async_trait]
impl Producer for StallingProducer {
    async fn send(&self, envelope: Envelope) -> Result<(), BinderError> {
        if self.sent.load(Ordering::SeqCst) >= self.before_stall {
            println!("msa-child: stalled after {}", self.before_stall);
            std::future::pending::<()>().await;
        }
        self.inner.send(envelope).await?;
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait::async_trait]
impl<B: Binder> Binder for StallAfter<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn producer(
        &self,
        destination: &str,
        options: &ProducerOptions,
    ) -> Result<Box<dyn Producer>, BinderError> {
        Ok(Box::new(StallingProducer {
            inner: self.inner.producer(destination, options).await?,
            sent: self.sent.clone(),
            before_stall: self.before_stall,
        }))
    }
    async fn consumer(
        &self,
        destination: &str,
        group: Option<&str>,
        options: &ConsumerOptions,
    ) -> Result<Box<dyn Consumer>, BinderError> {
        self.inner.consumer(destination, group, options).await
    }
    async fn dead_letter(
        &self,
        destination: &str,
        group: Option<&str>,
        envelope: Envelope,
    ) -> Result<(), BinderError> {
        self.inner.dead_letter(destination, group, envelope).await
    }
    async fn check(&self) -> Result<(), BinderError> {
        self.inner.check().await
    }
}

/// The child's side: relays `url`'s outbox to NATS in one batch and stalls after
/// [`BEFORE_STALL`] messages, saying so; waits to be killed.
pub async fn relay_until_killed(url: &str, nats: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder = msa_stream::nats::NatsBinder::connect(nats).await.unwrap();
    let stalling: Arc<dyn Binder> = Arc::new(StallAfter {
        inner: binder,
        sent: Arc::default(),
        before_stall: BEFORE_STALL,
    });
    let relay = Relay::new(store, bridge(stalling).await).batch(100);
    println!("msa-child: relaying");
    let _ = relay.publish_batch().await;
    unreachable!("the relay stalls until it is killed");
}

/// A relay process SIGKILLed between publishing part of a batch and recording it: after
/// a relay starts again, every message is published, in order, the ones published before
/// the kill twice — and a consumer that records message ids in its inbox acts on each
/// once.
pub async fn a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes(
    url: &str,
    nats: &str,
    child_test: &str,
) {
    let store = Store::connect(url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE seen (seq BIGINT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    write_messages(&store, 0, 60).await;
    let binder: Arc<dyn Binder> =
        Arc::new(msa_stream::nats::NatsBinder::connect(nats).await.unwrap());
    let (_consumer, mut rx) = consume(binder.clone(), "events").await;

    let urls = format!("{url} {nats}");
    let mut child = ChildProcess::start(child_test, (CHILD, &urls));
    child.hear("relaying");
    child.hear(&format!("stalled after {BEFORE_STALL}"));
    child.kill();
    assert_eq!(
        outbox_rows(&store).await,
        60,
        "nothing recorded as published"
    );

    // Published before the kill: the first BEFORE_STALL messages.
    let mut handled = Vec::new();
    let mut effects = 0;
    let mut on = async |message: Message<serde_json::Value>| {
        let id = message.headers[MESSAGE_ID].clone();
        let mut tx = store.begin().await.unwrap();
        if tx.receive_once("test", &id).await.unwrap() {
            sqlx::query("INSERT INTO seen (seq) VALUES ($1)")
                .bind(message.payload["seq"].as_i64().unwrap())
                .execute(tx.conn())
                .await
                .unwrap();
            effects += 1;
        }
        tx.commit().await.unwrap();
        handled.push(message.payload["seq"].as_i64().unwrap());
    };
    for _ in 0..BEFORE_STALL {
        on(recv(&mut rx).await).await;
    }
    // A relay again (this process): everything, from the start.
    let relay = Relay::new(store.clone(), bridge(binder).await).spawn();
    for _ in 0..60 {
        on(recv(&mut rx).await).await;
    }
    relay.stop().await;
    let expected: Vec<i64> = (0..BEFORE_STALL as i64).chain(0..60).collect();
    assert_eq!(handled, expected, "at least once, in order");
    assert_eq!(effects, 60, "each message acted on once");
    let seen: Vec<i64> = sqlx::query_scalar("SELECT seq FROM seen ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(seen, (0..60).collect::<Vec<i64>>());
    assert_eq!(outbox_rows(&store).await, 0);
}

/// A message the broker can never take (a destination name NATS refuses) is set aside in
/// `msa_outbox_failed` with the reason, and the messages after it still go out.
pub async fn a_message_the_broker_refuses_is_set_aside(url: &str, nats: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder: Arc<dyn Binder> =
        Arc::new(msa_stream::nats::NatsBinder::connect(nats).await.unwrap());
    let (_consumer, mut rx) = consume(binder.clone(), "events").await;
    for (binding, seq) in [("events", 1), ("no.dots.on.nats", 2), ("events", 3)] {
        let mut tx = store.begin().await.unwrap();
        tx.send(binding, Message::new(json!({ "seq": seq })))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let relay = Relay::new(store.clone(), bridge(binder).await).spawn();
    assert_eq!(recv(&mut rx).await.payload["seq"], 1);
    assert_eq!(recv(&mut rx).await.payload["seq"], 3);
    relay.stop().await;
    let row = sqlx::query("SELECT binding, error FROM msa_outbox_failed")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let (binding, error): (String, String) = (row.get(0), row.get(1));
    assert_eq!(binding, "no.dots.on.nats");
    assert!(error.contains("NATS names are 1 to 64"), "{error}");
    assert_eq!(outbox_rows(&store).await, 0);
}

// ---------------------------------------------------------------------------------------
// The inbox.

/// A handler that commits its effect and then fails (the acknowledgement lost): the
/// broker delivers the message again, and the inbox keeps the effect single. Two
/// deliveries of one id at once: one effect.
pub async fn a_redelivered_message_has_no_second_effect(url: &str) {
    let store = Store::connect(url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE charges (order_id TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let binder: Arc<dyn Binder> = Arc::new(MemoryBinder::new());
    let attempts = Arc::new(AtomicUsize::new(0));
    let settings: StreamSettings = serde_json::from_value(json!({
        "bindings": { "billing-in-0": { "destination": "orders", "group": "billing",
            "consumer": { "max-attempts": 3, "back-off-initial-interval": 1 } } }
    }))
    .unwrap();
    let (done, mut finished) = mpsc::unbounded_channel();
    let stream = StreamBuilder::on(binder.clone(), settings)
        .consumer("billing", {
            let store = store.clone();
            let attempts = attempts.clone();
            move |message: Message<serde_json::Value>| {
                let store = store.clone();
                let attempts = attempts.clone();
                let done = done.clone();
                async move {
                    let id = msa_events::inbox::message_id(&message.headers)
                        .ok_or("no message id")?
                        .to_owned();
                    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                    if tx
                        .receive_once("billing", &id)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        sqlx::query("INSERT INTO charges (order_id) VALUES ($1)")
                            .bind(message.payload["order"].as_str().unwrap_or_default())
                            .execute(tx.conn())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    tx.commit().await.map_err(|e| e.to_string())?;
                    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err("the acknowledgement was lost".to_owned());
                    }
                    let _ = done.send(());
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.send("orders", Message::new(json!({ "order": "o-1" })))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let relay = Relay::new(store.clone(), bridge(binder).await).spawn();
    tokio::time::timeout(Duration::from_secs(20), finished.recv())
        .await
        .unwrap();
    relay.stop().await;
    stream.shutdown().await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "delivered twice");
    let charges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM charges")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(charges, 1, "one effect");

    // Concurrent deliveries of one id: exactly one sees it first.
    let firsts = futures_util::future::join_all((0..8).map(|_| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let first = tx.receive_once("billing", "same-id").await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.commit().await.unwrap();
            first
        }
    }))
    .await;
    assert_eq!(
        firsts.iter().filter(|first| **first).count(),
        1,
        "{firsts:?}"
    );
    // Records older than the retention are forgotten; younger ones kept.
    assert_eq!(
        store.prune_inbox(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.prune_inbox(Duration::from_millis(10)).await.unwrap(),
        2
    );
    // Bounds: an oversized id is refused, not stored.
    let mut tx = store.begin().await.unwrap();
    let refused = tx
        .receive_once("billing", &"x".repeat(300))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("1 to 255 bytes"), "{refused}");
}

// ---------------------------------------------------------------------------------------
// Event sourcing.

/// Appends racing at one expected version: exactly one wins, the others get a typed
/// conflict, and the stream holds the winner's events only.
pub async fn parallel_appends_conflict(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let events = EventStore::new(store);
    events
        .append::<Account>("a-1", 0, &[AccountEvent::Deposited { amount: 100 }])
        .await
        .unwrap();
    let results = futures_util::future::join_all((0..8).map(|n| {
        let events = events.clone();
        async move {
            events
                .append::<Account>("a-1", 1, &[AccountEvent::Withdrawn { amount: n + 1 }])
                .await
        }
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter_map(|(n, r)| r.is_ok().then_some(n))
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        match result {
            Ok(version) => assert_eq!(*version, 2),
            Err(Error::Conflict {
                stream, expected, ..
            }) => {
                assert_eq!(stream, "account/a-1");
                assert_eq!(*expected, 1);
            }
            Err(other) => panic!("not a conflict: {other}"),
        }
    }
    let loaded = events.load::<Account>("a-1").await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.balance, 100 - (winners[0] as i64 + 1));
    // A stale expected version is a conflict naming what it found.
    let stale = events
        .append::<Account>("a-1", 1, &[AccountEvent::Deposited { amount: 1 }])
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::Conflict {
                actual: Some(2),
                ..
            }
        ),
        "{stale}"
    );
    // Commands retry after a conflict: all of them land (each conflict means another
    // landed, so ten racers need at most nine retries).
    let events = events.conflict_retries(9);
    futures_util::future::join_all((0..10).map(|_| {
        let events = events.clone();
        async move {
            events
                .execute::<Account>("a-2", Command::Deposit(1))
                .await
                .unwrap()
        }
    }))
    .await;
    let loaded = events.load::<Account>("a-2").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (10, 10));
}

/// Snapshots every 10 events: loading from the snapshot gives the state and version that
/// folding every event gives; a refused command appends nothing.
pub async fn snapshot_and_replay_agree(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let events = EventStore::new(store.clone()).snapshot_every(10);
    for n in 0..95 {
        let command = if n % 3 == 2 {
            Command::Withdraw(n)
        } else {
            Command::Deposit(n * 2)
        };
        events.execute::<Account>("a-1", command).await.unwrap();
    }
    let refused = events
        .execute::<Account>("a-1", Command::Withdraw(1_000_000))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("insufficient funds"),
        "{refused}"
    );
    let snapshot_at: i64 =
        sqlx::query_scalar("SELECT version FROM msa_snapshots WHERE stream_id = 'a-1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(snapshot_at, 90);
    let loaded = events.load::<Account>("a-1").await.unwrap();
    let replayed = events.replay::<Account>("a-1").await.unwrap();
    assert!(loaded.from_snapshot && !replayed.from_snapshot);
    assert_eq!(
        (&loaded.state, loaded.version),
        (&replayed.state, replayed.version)
    );
    assert_eq!(loaded.version, 95);
    assert_eq!(loaded.state.movements, 95);
}

/// An event written at an older schema is upcast when read; without the upcaster it does
/// not decode, with a reason.
pub async fn old_events_are_upcast(url: &str) {
    let store = Store::connect(url).await.unwrap();
    sqlx::query(
        "INSERT INTO msa_events (stream_type, stream_id, version, event_id, event_type, \
         event_version, payload, metadata, recorded_at) \
         VALUES ('account', 'old', 1, 'e-1', 'Deposited', 1, $1, 'null', 0)",
    )
    .bind(r#"{"type":"Deposited","amt":7}"#)
    .execute(store.pool())
    .await
    .unwrap();
    let plain = EventStore::new(store.clone());
    let error = plain.load::<Account>("old").await.unwrap_err().to_string();
    assert!(
        error.contains("Deposited event 1 of account/old (schema 1) does not decode"),
        "{error}"
    );
    let events = EventStore::new(store).upcast("account", "Deposited", 1, |mut event| {
        if let Some(amount) = event.as_object_mut().and_then(|e| e.remove("amt")) {
            event["amount"] = amount;
        }
        event
    });
    let loaded = events
        .execute::<Account>("old", Command::Deposit(3))
        .await
        .unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (10, 2));
    let stored = events.read_stream("account", "old").await.unwrap();
    assert_eq!(stored[0].event_version, 2, "upcast");
    assert_eq!(
        stored[0].payload,
        json!({ "type": "Deposited", "amount": 7 })
    );
    assert_eq!(stored[1].event_version, 2, "written at the current version");
}

/// Events of an aggregate with a publication binding go out through the outbox, keyed by
/// the aggregate id, with its headers.
pub async fn events_are_published_through_the_outbox(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder: Arc<dyn Binder> = Arc::new(MemoryBinder::new());
    let (_consumer, mut rx) = consume(binder.clone(), "accounts").await;
    let events = EventStore::new(store.clone()).publish("account", "accounts");
    events
        .execute::<Account>("a-9", Command::Deposit(5))
        .await
        .unwrap();
    events
        .execute::<Account>("a-9", Command::Withdraw(2))
        .await
        .unwrap();
    let relay = Relay::new(store.clone(), bridge(binder).await).spawn();
    let first = recv(&mut rx).await;
    let second = recv(&mut rx).await;
    relay.stop().await;
    assert_eq!(first.payload, json!({ "type": "Deposited", "amount": 5 }));
    assert_eq!(second.payload, json!({ "type": "Withdrawn", "amount": 2 }));
    assert_eq!(first.key.as_deref(), Some("a-9"));
    assert_eq!(first.headers["msa-event-type"], "Deposited");
    assert_eq!(second.headers["msa-sequence"], "2");
    assert_eq!(first.headers["msa-aggregate-type"], "account");
    let stored = events.read_stream("account", "a-9").await.unwrap();
    assert_eq!(first.headers[MESSAGE_ID], stored[0].event_id);
}

// ---------------------------------------------------------------------------------------
// Projections.

/// Balances per account, and how many events it has seen.
struct Balances;

#[async_trait::async_trait]
impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(&self, tx: &mut Tx, event: &RecordedEvent) -> Result<(), Error> {
        if event.stream_type != "account" {
            return Ok(());
        }
        let delta = match serde_json::from_value::<AccountEvent>(event.payload.clone()) {
            Ok(AccountEvent::Deposited { amount }) => amount,
            Ok(AccountEvent::Withdrawn { amount }) => -amount,
            Err(_) => return Ok(()),
        };
        sqlx::query(
            "INSERT INTO balances (id, balance, events) VALUES ($1, $2, 1) \
             ON CONFLICT (id) DO UPDATE SET balance = balances.balance + excluded.balance, \
             events = balances.events + 1",
        )
        .bind(&event.stream_id)
        .bind(delta)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut Tx) -> Result<(), Error> {
        sqlx::query("DELETE FROM balances")
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

async fn balances(store: &Store) -> BTreeMap<String, (i64, i64)> {
    sqlx::query("SELECT id, balance, events FROM balances")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}

/// A projector running while writers append from several tasks: once it has caught up,
/// the read model matches the event store; rebuilt from the event store it is the same;
/// the lag gauge reads 0.
pub async fn a_rebuilt_projection_equals_the_live_one(url: &str) {
    let store = Store::connect(url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE balances (id TEXT PRIMARY KEY, balance BIGINT NOT NULL, events BIGINT NOT NULL)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let events = EventStore::new(store.clone());
    let projector = Projector::new(events.clone(), Balances).unwrap().batch(16);
    let live = projector.clone().spawn();
    futures_util::future::join_all((0..4).map(|writer| {
        let events = events.clone();
        async move {
            for n in 0..40 {
                let id = format!("a-{}", (writer * 7 + n) % 10);
                let command = if n % 4 == 3 {
                    Command::Withdraw(1)
                } else {
                    Command::Deposit(n + writer)
                };
                let _ = events.execute::<Account>(&id, command).await;
            }
        }
    }))
    .await;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM msa_events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    for _ in 0..400 {
        let seen: i64 = balances(&store).await.values().map(|(_, n)| n).sum();
        if seen == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    live.stop().await;
    let live_model = balances(&store).await;
    assert_eq!(live_model.values().map(|(_, n)| n).sum::<i64>(), total);
    for (id, (balance, count)) in &live_model {
        let account = events.load::<Account>(id).await.unwrap();
        assert_eq!(
            (account.state.balance, account.version as i64),
            (*balance, *count),
            "{id}"
        );
    }
    let at = projector.checkpoint().await.unwrap();
    assert!(at > Position::default());
    assert_eq!(projector.rebuild().await.unwrap() as i64, total);
    assert_eq!(balances(&store).await, live_model, "rebuilt equals live");
    assert_eq!(projector.checkpoint().await.unwrap(), at);
    let metrics = msa_core::metrics::render();
    assert!(
        metrics.contains("msa_events_projection_lag{projection=\"balances\"} 0"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Sagas.

use msa_events::saga::{self, Orchestrator, Saga, StepContext};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    pub outcome: String,
    pub hotel: Option<String>,
    pub seat: Option<String>,
}

/// Steps a, b, c where c outlives its timeout: c (uncertain), b and a are compensated, in
/// that order; the saga is COMPENSATED with the reason.
pub async fn a_timed_out_step_compensates_in_reverse_order(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let undone = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let undo = |name: &'static str| {
        let undone = undone.clone();
        move |_: StepContext, trip: Trip| {
            undone.lock().unwrap().push(name.to_owned());
            async move { Ok::<_, String>(trip) }
        }
    };
    let saga = Saga::<Trip>::new("abc")
        .step("a", |_, trip| async move { Ok::<_, String>(trip) })
        .compensate(undo("a"))
        .step("b", |_, trip| async move { Ok::<_, String>(trip) })
        .compensate(undo("b"))
        .step("c", |_, trip| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, String>(trip)
        })
        .timeout(Duration::from_millis(300))
        .compensate(undo("c"));
    let orchestrator = Orchestrator::new(store).saga(saga);
    orchestrator
        .start("abc", "s-1", Trip::default())
        .await
        .unwrap();
    let done = orchestrator
        .wait("s-1", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.status, saga::Status::Compensated);
    assert_eq!(done.error.as_deref(), Some("c: timed out after 300ms"));
    assert_eq!(*undone.lock().unwrap(), ["c", "b", "a"]);
    let outcomes: Vec<&str> = done
        .history
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "done",
            "done",
            "timed out",
            "compensated",
            "compensated",
            "compensated"
        ]
    );
    // Starting the same id again starts nothing.
    orchestrator
        .start("abc", "s-1", Trip::default())
        .await
        .unwrap();
    assert_eq!(
        orchestrator.status("s-1").await.unwrap().unwrap().status,
        saga::Status::Compensated
    );
}

/// Command steps over messages: the orchestrator sends each command through the outbox,
/// a participant replies through its own outbox, the reply moves the saga on. A refusal
/// compensates the steps before; a participant that never answers times the step out.
pub async fn command_steps_go_over_messages(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let binder: Arc<dyn Binder> = Arc::new(MemoryBinder::new());
    let released = Arc::new(AtomicUsize::new(0));
    let saga = Saga::<Trip>::new("trip")
        .step("hotel", |_, mut trip: Trip| async move {
            trip.hotel = Some("H-1".into());
            Ok::<_, String>(trip)
        })
        .compensate({
            let released = released.clone();
            move |_, mut trip: Trip| {
                released.fetch_add(1, Ordering::SeqCst);
                trip.hotel = None;
                async move { Ok::<_, String>(trip) }
            }
        })
        .command(
            "seat",
            "flight-commands",
            |context, trip: &Trip| {
                Ok(Message::new(
                    json!({ "outcome": trip.outcome, "key": context.idempotency_key() }),
                ))
            },
            |mut trip: Trip, reply| {
                trip.seat = reply["seat"].as_str().map(str::to_owned);
                Ok(trip)
            },
        )
        .timeout(Duration::from_millis(1500));
    let orchestrator = Orchestrator::new(store.clone())
        .saga(saga)
        .reply_to("saga-replies")
        .poll(Duration::from_millis(100));
    // The participant (here in the same process, with the same store for brevity).
    let settings: StreamSettings = serde_json::from_value(json!({ "bindings": {
        "flights-in-0": { "destination": "flight-commands", "group": "flights" },
        "replies-in-0": { "destination": "saga-replies", "group": "orchestrator" }
    }}))
    .unwrap();
    let stream = StreamBuilder::on(binder.clone(), settings)
        .consumer("flights", {
            let store = store.clone();
            move |command: Message<serde_json::Value>| {
                let store = store.clone();
                async move {
                    let outcome = match command.payload["outcome"].as_str() {
                        Some("silent") => return Ok(()),
                        Some("refused") => Err("no seats".to_owned()),
                        _ => Ok(json!({ "seat": "12A" })),
                    };
                    let (to, reply) = saga::reply(&command, outcome).ok_or("not a saga command")?;
                    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                    tx.send(&to, reply).await.map_err(|e| e.to_string())?;
                    tx.commit().await.map_err(|e| e.to_string())
                }
            }
        })
        .consumer("replies", {
            let orchestrator = orchestrator.clone();
            move |reply: Message<serde_json::Value>| {
                let orchestrator = orchestrator.clone();
                async move {
                    orchestrator
                        .handle_reply(&reply)
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let relay = Relay::new(store.clone(), bridge(binder).await).spawn();
    let resumer = orchestrator.spawn();
    for (id, outcome) in [
        ("t-ok", "ok"),
        ("t-refused", "refused"),
        ("t-silent", "silent"),
    ] {
        let trip = Trip {
            outcome: outcome.into(),
            ..Trip::default()
        };
        orchestrator.start("trip", id, trip).await.unwrap();
    }
    let ok = orchestrator
        .wait("t-ok", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(ok.status, saga::Status::Completed, "{ok:?}");
    assert_eq!(ok.data["seat"], "12A");
    assert_eq!(ok.data["hotel"], "H-1");
    let refused = orchestrator
        .wait("t-refused", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(refused.status, saga::Status::Compensated, "{refused:?}");
    assert_eq!(refused.error.as_deref(), Some("seat: no seats"));
    assert_eq!(refused.data["hotel"], serde_json::Value::Null);
    let silent = orchestrator
        .wait("t-silent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(silent.status, saga::Status::Compensated, "{silent:?}");
    assert_eq!(silent.error.as_deref(), Some("seat: timed out after 1.5s"));
    assert_eq!(released.load(Ordering::SeqCst), 2);
    resumer.stop().await;
    relay.stop().await;
    stream.shutdown().await;
}

/// A compensation that keeps failing: the saga is FAILED, and `/actuator/sagas` lists it
/// with the reason, beside the counts by status.
pub async fn a_failing_compensation_leaves_a_failed_saga_on_the_report(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let saga = Saga::<Trip>::new("stuck")
        .step("hold", |_, trip| async move { Ok::<_, String>(trip) })
        .compensate(|_, _trip: Trip| async move { Err::<Trip, _>("the ledger is down") })
        .step(
            "fail",
            |_, _trip: Trip| async move { Err::<Trip, _>("refused") },
        );
    let orchestrator = Orchestrator::new(store).saga(saga).compensation_attempts(2);
    orchestrator
        .start("stuck", "x-1", Trip::default())
        .await
        .unwrap();
    let done = orchestrator
        .wait("x-1", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.status, saga::Status::Failed);
    assert_eq!(
        done.error.as_deref(),
        Some("compensating hold: the ledger is down")
    );
    let report = orchestrator.report(100).await.unwrap();
    assert_eq!(report["counts"]["FAILED"], 1, "{report}");
    assert_eq!(report["sagas"][0]["id"], "x-1");
    assert_eq!(report["sagas"][0]["status"], "FAILED");
    assert_eq!(report["sagas"][0]["type"], "stuck");
}

/// The environment variable that makes the `saga_child` test run [`sagas_until_killed`]:
/// the database URL.
pub const SAGA_CHILD: &str = "MSA_TEST_SAGA_CHILD";

fn trip_saga<F, Fut>(flight: F, store: Store) -> Saga<Trip>
where
    F: Fn(Trip) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Trip, String>> + Send + 'static,
{
    let flight = Arc::new(flight);
    let book = store.clone();
    Saga::<Trip>::new("trip")
        .step("hotel", move |context: StepContext, mut trip: Trip| {
            let store = book.clone();
            async move {
                // Idempotent: the booking's key is the step's.
                sqlx::query("INSERT INTO bookings (key) VALUES ($1) ON CONFLICT (key) DO NOTHING")
                    .bind(context.idempotency_key())
                    .execute(store.pool())
                    .await
                    .map_err(|e| e.to_string())?;
                trip.hotel = Some(context.idempotency_key());
                Ok::<_, String>(trip)
            }
        })
        .compensate(move |context: StepContext, mut trip: Trip| {
            let store = store.clone();
            async move {
                sqlx::query("DELETE FROM bookings WHERE key = $1")
                    .bind(context.idempotency_key())
                    .execute(store.pool())
                    .await
                    .map_err(|e| e.to_string())?;
                trip.hotel = None;
                Ok::<_, String>(trip)
            }
        })
        .step("flight", move |_, trip: Trip| {
            let flight = flight.clone();
            async move { flight(trip).await }
        })
}

/// The child's side: starts sagas `ok` and `fail`, whose flight step never finishes here,
/// says so, and waits to be killed.
pub async fn sagas_until_killed(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let flight = {
        let started = started.clone();
        move |_: Trip| {
            if started.fetch_add(1, Ordering::SeqCst) == 1 {
                println!("msa-child: in flight");
            }
            // Never finishes: the process is killed here.
            std::future::pending::<Result<Trip, String>>()
        }
    };
    let orchestrator = Orchestrator::new(store.clone())
        .saga(trip_saga(flight, store))
        .lease(Duration::from_secs(1));
    for id in ["ok", "fail"] {
        let trip = Trip {
            outcome: id.into(),
            ..Trip::default()
        };
        orchestrator.start("trip", id, trip).await.unwrap();
    }
    std::future::pending::<()>().await;
}

/// A process SIGKILLed in the middle of two sagas (the hotel booked, the flight running):
/// after a new orchestrator starts, one saga finishes and the other compensates — its
/// hotel booking is gone — each step's effect once.
pub async fn a_saga_killed_mid_way_resumes_after_restart(url: &str, child_test: &str) {
    let store = Store::connect(url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE bookings (key TEXT PRIMARY KEY)")
        .execute(store.pool())
        .await
        .unwrap();
    let mut child = ChildProcess::start(child_test, (SAGA_CHILD, url));
    child.hear("in flight");
    child.kill();
    let bookings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bookings")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(bookings, 2, "both hotels booked before the kill");
    for id in ["ok", "fail"] {
        let saga = Orchestrator::new(store.clone())
            .status(id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(saga.status, saga::Status::Running);
        assert_eq!(
            saga.step.as_deref(),
            None,
            "not known to this orchestrator yet"
        );
    }

    // Restarted: the flight succeeds for `ok` and is refused for `fail`.
    let flight = async |trip: Trip| {
        if trip.outcome == "ok" {
            Ok(Trip {
                seat: Some("1A".into()),
                ..trip
            })
        } else {
            Err("no seats".to_owned())
        }
    };
    let orchestrator = Orchestrator::new(store.clone())
        .saga(trip_saga(flight, store.clone()))
        .lease(Duration::from_secs(1))
        .poll(Duration::from_millis(100));
    let resumer = orchestrator.spawn();
    let ok = orchestrator
        .wait("ok", Duration::from_secs(20))
        .await
        .unwrap();
    let fail = orchestrator
        .wait("fail", Duration::from_secs(20))
        .await
        .unwrap();
    resumer.stop().await;
    assert_eq!(ok.status, saga::Status::Completed, "{ok:?}");
    assert_eq!(ok.data["seat"], "1A");
    assert_eq!(fail.status, saga::Status::Compensated, "{fail:?}");
    let bookings: Vec<String> = sqlx::query_scalar("SELECT key FROM bookings")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(bookings, ["ok:hotel"], "the failed trip's hotel released");
}

/// A step whose participant is away asks to run again later: the saga waits where it is
/// (running, its earlier steps kept), and finishes once the participant is back; a
/// compensation learns why the saga compensates.
pub async fn a_step_retried_later_waits_for_its_participant(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let back = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reason = Arc::new(std::sync::Mutex::new(None::<String>));
    let saga = Saga::<Trip>::new("held")
        .step("reserve", |_, trip| async move { Ok::<_, String>(trip) })
        .compensate({
            let reason = reason.clone();
            move |context: StepContext, trip: Trip| {
                *reason.lock().unwrap() = context.error.clone();
                async move { Ok::<_, String>(trip) }
            }
        })
        .step("charge", {
            let back = back.clone();
            move |_, trip: Trip| {
                let back = back.load(Ordering::SeqCst);
                async move {
                    match (back, trip.outcome.as_str()) {
                        (false, _) => Err(saga::StepError::retry_later(
                            "payments is away",
                            Duration::from_millis(100),
                        )),
                        (true, "declined") => Err("declined".into()),
                        (true, _) => Ok(trip),
                    }
                }
            }
        });
    let orchestrator = Orchestrator::new(store)
        .saga(saga)
        .poll(Duration::from_millis(50));
    let resumer = orchestrator.spawn();
    for id in ["ok", "declined"] {
        let trip = Trip {
            outcome: id.into(),
            ..Trip::default()
        };
        orchestrator.start("held", id, trip).await.unwrap();
    }
    let held = orchestrator
        .wait_for("ok", Duration::from_secs(10), |saga| saga.attempts >= 3)
        .await
        .unwrap();
    assert_eq!(held.status, saga::Status::Running, "{held:?}");
    assert_eq!(held.step.as_deref(), Some("charge"));
    back.store(true, Ordering::SeqCst);
    let ok = orchestrator
        .wait("ok", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ok.status, saga::Status::Completed, "{ok:?}");
    let retried = ok
        .history
        .iter()
        .filter(|e| e["outcome"] == "retrying")
        .count();
    assert_eq!(
        retried, 1,
        "one entry for a run of retries: {:?}",
        ok.history
    );
    let declined = orchestrator
        .wait("declined", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(declined.status, saga::Status::Compensated);
    assert_eq!(reason.lock().unwrap().as_deref(), Some("charge: declined"));
    resumer.stop().await;
}

/// Every case of the suite as tests of the binary that expands it, on the databases its
/// `async fn database() -> (String, guard)` makes, with the two process-killing cases and
/// the children they kill.
macro_rules! all_cases {
    () => {
        all_cases!(@cases
            the_relay_publishes_committed_messages_in_order,
            several_relays_publish_each_message_once,
            a_redelivered_message_has_no_second_effect,
            parallel_appends_conflict,
            snapshot_and_replay_agree,
            old_events_are_upcast,
            events_are_published_through_the_outbox,
            a_rebuilt_projection_equals_the_live_one,
            a_timed_out_step_compensates_in_reverse_order,
            command_steps_go_over_messages,
            a_failing_compensation_leaves_a_failed_saga_on_the_report,
            a_step_retried_later_waits_for_its_participant,
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_saga_killed_mid_way_resumes_after_restart() {
            let (url, _dir) = database().await;
            suite::a_saga_killed_mid_way_resumes_after_restart(&url, "saga_child").await;
        }

        /// The saga process the test above kills (run only as its child).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the child process of a_saga_killed_mid_way_resumes_after_restart"]
        async fn saga_child() {
            if let Ok(url) = std::env::var(suite::SAGA_CHILD) {
                suite::sagas_until_killed(&url).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes() {
            let store = tempfile::tempdir().unwrap();
            let nats = nats_server::Server::start(store.path(), nats_server::free_port());
            nats.binder().await;
            let (url, _dir) = database().await;
            suite::a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes(
                &url,
                &nats.url(),
                "relay_child",
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_message_the_broker_refuses_is_set_aside() {
            let store = tempfile::tempdir().unwrap();
            let nats = nats_server::Server::start(store.path(), nats_server::free_port());
            nats.binder().await;
            let (url, _dir) = database().await;
            suite::a_message_the_broker_refuses_is_set_aside(&url, &nats.url()).await;
        }

        /// The relay process the test above kills (run only as its child).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the child process of a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes"]
        async fn relay_child() {
            if let Ok(urls) = std::env::var(suite::CHILD)
                && let Some((database, nats)) = urls.split_once(' ')
            {
                suite::relay_until_killed(database, nats).await;
            }
        }
    };
    (@cases $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (url, _dir) = database().await;
                suite::$name(&url).await;
            }
        )*
    };
}
