//! msa-events measured (run by `bench/events.sh`, which starts the servers):
//!
//! - outbox latency: a message committed with its row → a consumer on NATS receives it
//!   (the relay woken by the commit: `LISTEN/NOTIFY` on PostgreSQL, in-process on SQLite),
//!   p50/p99 at a steady rate, beside the same message sent directly through msa-stream
//!   (no database) in the same run;
//! - event store appends per second: one aggregate (each append waits for the last), and
//!   1,000 aggregates from 8 writers;
//! - projection catch-up: events per second folded into a read model from the start.
//!
//! Usage: events --database URL --nats URL [--messages N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use msa_events::event_store::RecordedEvent;
use msa_events::outbox::Relay;
use msa_events::projection::{Projection, Projector};
use msa_events::{Aggregate, Error, EventStore, Store, Tx};
use msa_stream::binder::Binder;
use msa_stream::config::StreamSettings;
use msa_stream::message::Message;
use msa_stream::nats::NatsBinder;
use msa_stream::stream::{StreamBridge, StreamBuilder};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum Counted {
    Added { by: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = Counted;
    type Error = Never;
    fn handle(&self, by: u64) -> Result<Vec<Counted>, Never> {
        Ok(vec![Counted::Added { by }])
    }
    fn apply(&mut self, Counted::Added { by }: &Counted) {
        self.n += by;
    }
}

struct Totals;

#[async_trait::async_trait]
impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }
    async fn apply(&self, tx: &mut Tx, event: &RecordedEvent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO totals (id, n) VALUES ($1, 1) \
             ON CONFLICT (id) DO UPDATE SET n = totals.n + 1",
        )
        .bind(&event.stream_id)
        .execute(tx.conn())
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut Tx) -> Result<(), Error> {
        sqlx::query("DELETE FROM totals").execute(tx.conn()).await?;
        Ok(())
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database = arg("--database").ok_or("--database URL")?;
    let nats = arg("--nats").ok_or("--nats URL")?;
    let messages: usize = arg("--messages").map_or(Ok(2000), |n| n.parse())?;
    let store = Store::connect(&database).await?;
    let backend = format!("{:?}", store.backend());
    let binder: Arc<dyn Binder> = Arc::new(NatsBinder::connect(&nats).await?);

    // Latency: the same messages through the outbox and sent directly, alternating.
    let destination = format!("bench-{}", fastrand::u32(..));
    let settings: StreamSettings = serde_json::from_value(json!({ "bindings": {
        "sink-in-0": { "destination": destination, "group": "bench" },
        "out": { "destination": destination }
    }}))?;
    let (seen, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let stream = StreamBuilder::on(binder.clone(), settings)
        .consumer("sink", move |message: Message<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                let seq = message.payload["seq"].as_u64().unwrap_or(u64::MAX);
                seen.send((seq, Instant::now())).map_err(|e| e.to_string())
            }
        })
        .start()
        .await?;
    let bridge = StreamBridge::new();
    bridge.connect(stream.clone());
    let relay = Relay::new(store.clone(), bridge.clone()).spawn();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS notes (seq BIGINT PRIMARY KEY)")
        .execute(store.pool())
        .await?;
    let mut outbox = Vec::with_capacity(messages);
    let mut direct = Vec::with_capacity(messages);
    let mut commits = Vec::with_capacity(messages);
    for seq in 0..(2 * messages) as u64 {
        let began = Instant::now();
        // From the commit (outbox) or the send (direct) to the consumer.
        let started = if seq % 2 == 0 {
            let mut tx = store.begin().await?;
            sqlx::query("INSERT INTO notes (seq) VALUES ($1)")
                .bind(seq as i64)
                .execute(tx.conn())
                .await?;
            tx.send("out", Message::new(json!({ "seq": seq }))).await?;
            tx.commit().await?;
            commits.push(began.elapsed());
            Instant::now()
        } else {
            let started = Instant::now();
            stream.send("out", json!({ "seq": seq })).await?;
            started
        };
        let (got, at) = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await?
            .ok_or("the consumer stopped")?;
        if got != seq {
            return Err(format!("expected {seq}, got {got}").into());
        }
        let took = at - started;
        if seq % 2 == 0 {
            outbox.push(took);
        } else {
            direct.push(took);
        }
        // A steady rate, not a flood: one message every 2 ms.
        tokio::time::sleep(Duration::from_millis(2).saturating_sub(began.elapsed())).await;
    }
    relay.stop().await;
    stream.shutdown().await;
    outbox.sort();
    direct.sort();
    commits.sort();
    println!(
        "| {backend} | the writer's transaction (row + outbox message) | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&commits, 0.5),
        percentile(&commits, 0.99)
    );
    println!(
        "| {backend} | outbox commit → consumer (NATS) | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&outbox, 0.5),
        percentile(&outbox, 0.99)
    );
    println!(
        "| {backend} | direct send → consumer (NATS, no database), same run | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&direct, 0.5),
        percentile(&direct, 0.99)
    );

    // Appends: one aggregate, each append after the last.
    let events = EventStore::new(store.clone());
    let appends = 2000;
    let started = Instant::now();
    for version in 0..appends {
        events
            .append::<Counter>("single", version, &[Counted::Added { by: 1 }])
            .await?;
    }
    let rate = appends as f64 / started.elapsed().as_secs_f64();
    println!("| {backend} | appends, one aggregate | {rate:.0}/s |");

    // Appends: 1,000 aggregates from 8 writers.
    let started = Instant::now();
    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let events = events.clone();
            tokio::spawn(async move {
                // Each writer its own 125 aggregates, four events each.
                for n in 0..500u64 {
                    let id = format!("a{}", writer * 125 + n % 125);
                    let version = n / 125;
                    events
                        .append::<Counter>(&id, version, &[Counted::Added { by: 1 }])
                        .await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let rate = 4000.0 / started.elapsed().as_secs_f64();
    println!("| {backend} | appends, 1,000 aggregates, 8 writers | {rate:.0}/s |");

    // Catch-up: every event so far into a read model.
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(store.pool())
        .await?;
    let projector = Projector::new(events.clone(), Totals)?;
    let started = Instant::now();
    let applied = projector.rebuild().await?;
    let rate = applied as f64 / started.elapsed().as_secs_f64();
    println!("| {backend} | projection catch-up ({applied} events) | {rate:.0}/s |");
    Ok(())
}
