//! Run with: bench/stream.sh (it builds this in release mode and starts nats-server).
//!
//! Publish and consume throughput, and end-to-end latency, through msa-stream and through
//! the raw `async-nats` JetStream client, side by side in one run against one server, plus
//! msa-stream's in-process binder. Every message is the same ~100-byte JSON document;
//! both sides decode it on receipt (as an application does).
//!
//! - publish: `--messages` sends with up to 256 awaiting the server's acknowledgement;
//! - consume: the backlog those sends left, drained by one consumer (acknowledging each);
//! - latency: 2,000 messages sent one by one every 500 µs to a running consumer, from the
//!   send call to the handler.
//!
//! The table has each side's median over the rounds, and the median of its per-round
//! ratios to the raw client (sides alternate order between rounds).
//!
//! Usage: throughput --url nats://127.0.0.1:4222 [--messages 50000] [--rounds 3]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use msa_stream::binder::{Binder, ConsumerOptions};
use msa_stream::config::StreamSettings;
use msa_stream::memory::MemoryBinder;
use msa_stream::message::Message;
use msa_stream::nats::NatsBinder;
use msa_stream::stream::{Stream, StreamBuilder};
use serde::{Deserialize, Serialize};

/// Sends in flight at most, on every side.
const WINDOW: usize = 256;
/// Messages of the latency run.
const PACED: usize = 2_000;

#[derive(Serialize, Deserialize)]
struct Event {
    /// Nanoseconds since the run began, when sent.
    sent: u64,
    order: String,
    note: String,
}

fn event(start: Instant, n: usize) -> Event {
    Event {
        sent: u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        order: format!("order-{n:08}"),
        note: "x".repeat(48),
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// What one consumer saw: how many, and each one's latency (ns).
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

impl Seen {
    fn record(&self, start: Instant, event: &Event) {
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.latencies
            .lock()
            .unwrap()
            .push(now.saturating_sub(event.sent));
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    async fn until(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} arrived",
                self.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut all = self.latencies.lock().unwrap().clone();
        all.sort_unstable();
        let at = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(at).copied().unwrap_or(0) as f64 / 1e6
    }
}

struct Figures {
    publish: f64,
    consume: f64,
    p50: f64,
    p99: f64,
}

/// The raw client: a stream with file storage, a durable pull consumer, `publish` with
/// pipelined acknowledgements, `messages()` with `ack`.
async fn raw(url: &str, name: &str, messages: usize) -> Figures {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let durable: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "g",
            consumer::pull::Config {
                durable_name: Some("g".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let start = Instant::now();
    let subject = format!("{name}.p.0");

    // publish
    let began = Instant::now();
    let mut acks = FuturesUnordered::new();
    for n in 0..messages {
        let body = serde_json::to_vec(&event(start, n)).unwrap();
        acks.push(std::future::IntoFuture::into_future(
            js.publish(subject.clone(), body.into()).await.unwrap(),
        ));
        if acks.len() >= WINDOW {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
    let publish = messages as f64 / began.elapsed().as_secs_f64();

    // consume the backlog, then the paced run
    let seen = Arc::new(Seen::default());
    let reader = seen.clone();
    let began = Instant::now();
    let task = tokio::spawn(async move {
        let mut incoming = durable.messages().await.unwrap();
        while let Some(Ok(message)) = incoming.next().await {
            let event: Event = serde_json::from_slice(&message.payload).unwrap();
            reader.record(start, &event);
            message.ack().await.unwrap();
        }
    });
    seen.until(messages as u64).await;
    let consume = messages as f64 / began.elapsed().as_secs_f64();
    seen.latencies.lock().unwrap().clear();
    for n in 0..PACED {
        let body = serde_json::to_vec(&event(start, n)).unwrap();
        js.publish(subject.clone(), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    seen.until((messages + PACED) as u64).await;
    task.abort();
    js.delete_stream(name).await.unwrap();
    Figures {
        publish,
        consume,
        p50: seen.percentile(0.50),
        p99: seen.percentile(0.99),
    }
}

/// msa-stream: a `Stream` sending with `send`, a consumer group handling `Message<Event>`
/// at `concurrency`.
async fn msa(binder: Arc<dyn Binder>, name: &str, messages: usize, concurrency: u32) -> Figures {
    let settings: StreamSettings = serde_json::from_value(serde_json::json!({
        "bindings": {
            "bench-in-0": { "destination": name, "group": "g",
                            "consumer": { "concurrency": concurrency } },
        }
    }))
    .unwrap();
    let start = Instant::now();
    // The group exists before the sends (as the raw side's durable does), without an
    // instance: its consumer starts after the publish run.
    let options = ConsumerOptions {
        prefetch: (2 * concurrency).max(msa_stream::stream::MIN_PREFETCH),
        ..ConsumerOptions::default()
    };
    let mut group = binder.consumer(name, Some("g"), &options).await.unwrap();
    group.close().await;
    drop(group);
    let producer: Stream = StreamBuilder::on(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();

    let began = Instant::now();
    let mut sends = FuturesUnordered::new();
    for n in 0..messages {
        sends.push(producer.send(name, event(start, n)));
        if sends.len() >= WINDOW {
            sends.next().await.unwrap().unwrap();
        }
    }
    while let Some(sent) = sends.next().await {
        sent.unwrap();
    }
    let publish = messages as f64 / began.elapsed().as_secs_f64();

    let began = Instant::now();
    let seen = Arc::new(Seen::default());
    let reader = seen.clone();
    let consumer = StreamBuilder::on(binder, settings)
        .consumer("bench", move |message: Message<Event>| {
            let reader = reader.clone();
            async move {
                reader.record(start, &message.payload);
                Ok::<_, String>(())
            }
        })
        .start()
        .await
        .unwrap();
    seen.until(messages as u64).await;
    let consume = messages as f64 / began.elapsed().as_secs_f64();
    seen.latencies.lock().unwrap().clear();
    for n in 0..PACED {
        producer.send(name, event(start, n)).await.unwrap();
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    seen.until((messages + PACED) as u64).await;
    consumer.shutdown().await;
    producer.shutdown().await;
    Figures {
        publish,
        consume,
        p50: seen.percentile(0.50),
        p99: seen.percentile(0.99),
    }
}

#[tokio::main]
async fn main() {
    let url = arg("--url", "nats://127.0.0.1:4222");
    let messages: usize = arg("--messages", "50000").parse().unwrap();
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    let nats: Arc<dyn Binder> = Arc::new(NatsBinder::connect(&url).await.unwrap());
    let memory: Arc<dyn Binder> = Arc::new(MemoryBinder::new());

    let sides = [
        "raw async-nats",
        "msa-stream nats, concurrency 1",
        "msa-stream nats, concurrency 64",
        "msa-stream memory, concurrency 1",
    ];
    let only: Option<usize> = std::env::args()
        .position(|a| a == "--side")
        .map(|_| arg("--side", "0").parse().unwrap());
    let mut results: Vec<Vec<Figures>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Odd rounds run the sides in reverse, so that none is always first.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for side in order {
            let name = sides[side];
            if only.is_some_and(|only| only != side) {
                continue;
            }
            let destination = format!("bench{round}x{side}");
            let figures = match side {
                0 => raw(&url, &destination, messages).await,
                1 => msa(nats.clone(), &destination, messages, 1).await,
                2 => msa(nats.clone(), &destination, messages, 64).await,
                _ => msa(memory.clone(), &destination, messages, 1).await,
            };
            eprintln!(
                "round {round}: {name}: publish {:.0}/s, consume {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                figures.publish, figures.consume, figures.p50, figures.p99
            );
            results[side].push(figures);
        }
    }
    if only.is_some() {
        return; // one side (for profiling): no table
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let summary: Vec<[f64; 4]> = results
        .iter()
        .map(|runs| {
            [
                median(&mut runs.iter().map(|f| f.publish).collect()),
                median(&mut runs.iter().map(|f| f.consume).collect()),
                median(&mut runs.iter().map(|f| f.p50).collect()),
                median(&mut runs.iter().map(|f| f.p99).collect()),
            ]
        })
        .collect();
    // Each side's ratio to the raw client in the same round, then the median of those
    // (the machine's speed drifts between rounds more than the sides differ).
    let ratio = |side: usize, of: fn(&Figures) -> f64| {
        median(
            &mut results[side]
                .iter()
                .zip(&results[0])
                .map(|(f, raw)| of(f) / of(raw))
                .collect(),
        )
    };
    println!("| side | publish msg/s | × raw | consume msg/s | × raw | latency p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (side, (name, [publish, consume, p50, p99])) in sides.iter().zip(&summary).enumerate() {
        println!(
            "| {name} | {publish:.0} | {:.2} | {consume:.0} | {:.2} | {p50:.2} ms | {p99:.2} ms |",
            ratio(side, |f| f.publish),
            ratio(side, |f| f.consume),
        );
    }
}
