//! The conformance suite every binder runs: `tests/conformance.rs` runs it on the
//! in-process binder, `tests/nats.rs` on a real nats-server.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msa_stream::binder::{Binder, ProducerOptions};
use msa_stream::config::StreamSettings;
use msa_stream::message::{EXCEPTION_KIND, EXCEPTION_MESSAGE, Envelope, Message};
use msa_stream::stream::{Stream, StreamBuilder};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub key: String,
    pub seq: u32,
}

pub type Seen = Arc<Mutex<Vec<(String, Event)>>>;

pub fn settings(value: serde_json::Value) -> StreamSettings {
    serde_json::from_value(value).unwrap()
}

/// An instance called `who` consuming `in` into `seen`.
pub async fn instance<B: Binder + Clone>(
    binder: &B,
    settings: StreamSettings,
    who: &str,
    seen: &Seen,
) -> Stream {
    let (who, seen) = (who.to_owned(), seen.clone());
    StreamBuilder::new(binder.clone(), settings)
        .consumer("in", move |message: Message<Event>| {
            let (who, seen) = (who.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push((who, message.payload));
                Ok::<_, String>(())
            }
        })
        .start()
        .await
        .unwrap()
}

pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never: {what}");
}

pub async fn send_events(stream: &Stream, binding: &str, keys: u32, per_key: u32) {
    for seq in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            let event = Event {
                key: key.clone(),
                seq,
            };
            stream
                .send_message(binding, Message::new(event).with_key(key))
                .await
                .unwrap();
        }
    }
}

pub async fn every_group_gets_each_message_once_and_a_groups_instances_share_them<
    B: Binder + Clone,
>(
    binder: &B,
) {
    let seen: Seen = Arc::default();
    let group = |g: &str| {
        settings(json!({ "bindings": { "in-in-0": { "destination": "events", "group": g } } }))
    };
    let billing_a = instance(binder, group("billing"), "billing-a", &seen).await;
    let billing_b = instance(binder, group("billing"), "billing-b", &seen).await;
    let audit = instance(binder, group("audit"), "audit", &seen).await;
    let producer = StreamBuilder::new(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();
    send_events(&producer, "events", 10, 10).await;
    until("200 handled", || seen.lock().unwrap().len() == 200).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "no message twice");
    let audit_got: BTreeSet<_> = seen
        .iter()
        .filter(|(who, _)| who == "audit")
        .map(|(_, e)| (e.key.clone(), e.seq))
        .collect();
    assert_eq!(
        audit_got.len(),
        100,
        "the audit group got every message once"
    );
    let billing: Vec<_> = seen
        .iter()
        .filter(|(who, _)| who.starts_with("billing"))
        .collect();
    let billing_set: BTreeSet<_> = billing
        .iter()
        .map(|(_, e)| (e.key.clone(), e.seq))
        .collect();
    assert_eq!(
        (billing.len(), billing_set.len()),
        (100, 100),
        "billing got each once"
    );
    let a = billing.iter().filter(|(who, _)| who == "billing-a").count();
    assert!(a > 0 && a < 100, "both billing instances took a share: {a}");
    for stream in [billing_a, billing_b, audit, producer] {
        stream.shutdown().await;
    }
}

pub async fn messages_of_one_key_stay_in_order_across_partitioned_instances<B: Binder + Clone>(
    binder: &B,
) {
    let seen: Seen = Arc::default();
    let consumer = |index: u32| {
        settings(json!({ "bindings": { "in-in-0": {
            "destination": "events", "group": "g",
            "consumer": { "partitioned": true, "instance-index": index, "instance-count": 2,
                          "partition-count": 4, "concurrency": 3 }
        } } }))
    };
    let a = instance(binder, consumer(0), "a", &seen).await;
    let b = instance(binder, consumer(1), "b", &seen).await;
    let producer = StreamBuilder::new(
        binder.clone(),
        settings(json!({ "bindings": { "out": { "destination": "events", "producer": { "partition-count": 4 } } } })),
    )
    .start()
    .await
    .unwrap();
    send_events(&producer, "out", 12, 25).await;
    until("300 handled", || seen.lock().unwrap().len() == 300).await;
    let seen = seen.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, (BTreeSet<String>, Vec<u32>)> = BTreeMap::new();
    for (who, event) in seen {
        let entry = by_key.entry(event.key).or_default();
        entry.0.insert(who);
        entry.1.push(event.seq);
    }
    let mut instances = BTreeSet::new();
    for (key, (who, seqs)) in by_key {
        assert_eq!(who.len(), 1, "{key} went to one instance: {who:?}");
        assert_eq!(seqs, (0..25).collect::<Vec<_>>(), "{key} in order");
        instances.extend(who);
    }
    assert_eq!(instances.len(), 2, "both instances own partitions");
    for stream in [a, b, producer] {
        stream.shutdown().await;
    }
}

pub async fn a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest<
    B,
    F,
    Fut,
>(
    binder: &B,
    dead_letters: F,
) where
    B: Binder + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Envelope>>,
{
    let seen: Seen = Arc::default();
    let stream = instance(
        binder,
        settings(json!({ "bindings": { "in-in-0": { "destination": "events", "group": "g" } } })),
        "a",
        &seen,
    )
    .await;
    let producer = binder
        .producer("events", &ProducerOptions::default())
        .await
        .unwrap();
    producer.send(Envelope::new("{not json")).await.unwrap();
    let mut odd = Envelope::new("<event/>");
    odd.headers
        .insert("contentType".into(), "application/xml".into());
    producer.send(odd).await.unwrap();
    let good = serde_json::to_vec(&Event {
        key: "k".into(),
        seq: 1,
    })
    .unwrap();
    producer.send(Envelope::new(good)).await.unwrap();
    until("the good one handled", || seen.lock().unwrap().len() == 1).await;
    let mut dead = Vec::new();
    for _ in 0..400 {
        dead = dead_letters().await;
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead.len(), 2, "two dead letters");
    assert!(dead.iter().all(|d| d.headers[EXCEPTION_KIND] == "decode"));
    assert!(dead[0].headers[EXCEPTION_MESSAGE].contains("does not decode"));
    assert!(dead[1].headers[EXCEPTION_MESSAGE].contains("application/xml"));
    stream.shutdown().await;
}

/// A handler that always fails is tried `max-attempts` times, waiting longer each time,
/// then its message goes to the dead letter with the reason, and is not handled again.
pub async fn a_failing_handler_is_retried_then_dead_lettered<B, F, Fut>(binder: &B, dead_letters: F)
where
    B: Binder + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Envelope>>,
{
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let stream = StreamBuilder::new(
        binder.clone(),
        settings(json!({ "bindings": { "pay-in-0": {
            "destination": "payments", "group": "g",
            "consumer": { "max-attempts": 3, "back-off-initial-interval": "20ms",
                          "back-off-multiplier": 2.0, "back-off-max-interval": "1s" }
        } } })),
    )
    .consumer("pay", move |_: Message<Event>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(std::time::Instant::now());
            Err::<(), _>("card declined")
        }
    })
    .start()
    .await
    .unwrap();
    stream
        .send(
            "payments",
            Event {
                key: "a".into(),
                seq: 0,
            },
        )
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..400 {
        dead = dead_letters().await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].headers[EXCEPTION_MESSAGE], "card declined");
    assert_eq!(dead[0].headers[EXCEPTION_KIND], "handler");
    assert_eq!(dead[0].headers["x-attempts"], "3");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let times = attempts.lock().unwrap().clone();
    assert_eq!(
        times.len(),
        3,
        "max-attempts in all, and no more once dead-lettered"
    );
    assert!(times[1] - times[0] >= Duration::from_millis(20));
    assert!(
        times[2] - times[1] >= Duration::from_millis(40),
        "the wait grows"
    );
    stream.shutdown().await;
}

/// Stopping an instance under load finishes and acknowledges what it holds; another
/// instance of the group then handles the rest: nothing lost, nothing twice.
pub async fn graceful_shutdown_under_load_loses_nothing<B: Binder + Clone>(binder: &B) {
    let seen: Seen = Arc::default();
    // Handlers start once everything is sent, and take 10 ms each: the first instance is
    // stopped with most of the messages still to handle, whatever the broker's speed.
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = |who: &str| {
        let (who, seen, sent) = (who.to_owned(), seen.clone(), sent.clone());
        StreamBuilder::new(
            binder.clone(),
            settings(
                json!({ "bindings": { "in-in-0": { "destination": "events", "group": "g",
                "consumer": { "concurrency": 4 } } } }),
            ),
        )
        .consumer("in", move |message: Message<Event>| {
            let (who, seen, sent) = (who.clone(), seen.clone(), sent.clone());
            async move {
                while !sent.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.lock().unwrap().push((who, message.payload));
                Ok::<_, String>(())
            }
        })
    };
    let first = slow("first").start().await.unwrap();
    let producer = StreamBuilder::new(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();
    send_events(&producer, "events", 10, 30).await;
    sent.store(true, std::sync::atomic::Ordering::Relaxed);
    until("some handled", || seen.lock().unwrap().len() >= 30).await;
    first.shutdown().await;
    let by_first = seen.lock().unwrap().len();
    assert!(by_first < 300, "stopped before the end: {by_first}");
    let second = slow("second").start().await.unwrap();
    until("the rest handled", || seen.lock().unwrap().len() >= 300).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all: BTreeSet<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| (e.key.clone(), e.seq))
        .collect();
    assert_eq!(all.len(), 300, "every message handled");
    assert_eq!(seen.lock().unwrap().len(), 300, "none twice");
    for stream in [second, producer] {
        stream.shutdown().await;
    }
}

/// The environment variable that makes a test binary's `killed_child` test the consumer
/// [`a_consumer_killed_mid_message_hands_it_to_another`] kills (the broker's URL).
pub const CHILD_BROKER: &str = "MSA_TEST_CHILD_BROKER";

/// The child's side: a member of group `g` of `handover` that takes one message and never
/// finishes it, saying so on stdout; it waits to be killed.
pub async fn hold_one_message<B: Binder + Clone>(binder: &B) {
    let stream = StreamBuilder::new(
        binder.clone(),
        settings(
            json!({ "bindings": { "hold-in-0": { "destination": "handover", "group": "g" } } }),
        ),
    )
    .consumer("hold", |message: Message<Event>| async move {
        println!("msa-child: holding {}", message.payload.seq);
        std::future::pending::<Result<(), String>>().await
    })
    .start()
    .await
    .unwrap();
    println!("msa-child: ready");
    std::future::pending::<()>().await;
    drop(stream);
}

/// A consumer process killed with SIGKILL while it handles a message: another member of
/// the group handles that message (`child_test` is the test that runs
/// [`hold_one_message`] when [`CHILD_BROKER`] is `url`).
pub async fn a_consumer_killed_mid_message_hands_it_to_another<B: Binder + Clone>(
    binder: &B,
    child_test: &str,
    url: &str,
) {
    use std::io::BufRead as _;
    /// Killed when the test ends, however it ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BROKER, url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (said, hear) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let mut child = Killed(child);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // libtest's "test killed_child ... " may start the line.
            if let Some((_, said_it)) = line.split_once("msa-child: ") {
                let _ = said.send(said_it.to_owned());
            }
        }
    });
    let heard = |what: &str| {
        let line = hear
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the child never said {what:?}"));
        assert_eq!(line, what);
    };
    heard("ready");
    let producer = StreamBuilder::new(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();
    producer
        .send(
            "handover",
            Event {
                key: "k".into(),
                seq: 42,
            },
        )
        .await
        .unwrap();
    heard("holding 42");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let seen: Seen = Arc::default();
    let other = StreamBuilder::new(
        binder.clone(),
        settings(json!({ "bindings": { "in-in-0": { "destination": "handover", "group": "g" } } })),
    );
    let sink = seen.clone();
    let other = other
        .consumer("in", move |message: Message<Event>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(("other".into(), message.payload));
                Ok::<_, String>(())
            }
        })
        .start()
        .await
        .unwrap();
    until("the killed consumer's message handled by the other", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(seen.lock().unwrap()[0].1.seq, 42);
    for stream in [other, producer] {
        stream.shutdown().await;
    }
}

/// The producer's trace crosses to the consumer: the consumer's span is a child of the
/// producer's, so its logs carry the producer's trace id (the caller's binary must have no
/// other tracing subscriber: it installs one for its thread).
pub async fn the_trace_crosses_from_producer_to_consumer<B: Binder + Clone>(binder: &B) {
    let (dispatch, _guard) = msa_core::telemetry::Telemetry::new("stream-test")
        .writer(std::io::sink)
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = StreamBuilder::new(
        binder.clone(),
        serde_json::from_value(
            json!({ "bindings": { "in-in-0": { "destination": "events", "group": "g" } } }),
        )
        .unwrap(),
    )
    .consumer("in", move |_: Message<u32>| {
        let tx = tx.clone();
        async move {
            tx.send(msa_core::telemetry::current_trace_id())
                .map_err(|e| e.to_string())
        }
    })
    .start()
    .await
    .unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let parent = msa_core::telemetry::propagation::extract(&headers);
    let span = tracing::info_span!("produce");
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(parent);
    }
    {
        use tracing::Instrument as _;
        stream.send("events", 1u32).instrument(span).await.unwrap();
    }
    let consumed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(consumed.as_deref(), Some(trace));
    stream.shutdown().await;
}

/// The consumer lag a binder reports: what waits for the group, not yet delivered.
pub async fn the_consumer_lag_is_what_waits_for_the_group<B: Binder + Clone>(binder: &B) {
    let options = msa_stream::binder::ConsumerOptions::default();
    // The group exists, and has no instance while the messages are sent (a broker may
    // hand messages to a connected instance ahead of its handling).
    let mut consumer = binder
        .consumer("lagging", Some("g"), &options)
        .await
        .unwrap();
    consumer.close().await;
    drop(consumer);
    let producer = binder
        .producer("lagging", &ProducerOptions::default())
        .await
        .unwrap();
    for n in 0..5 {
        producer.send(Envelope::new(format!("{n}"))).await.unwrap();
    }
    let mut lag = None;
    for _ in 0..200 {
        lag = binder.lag("lagging", "g", &options).await.unwrap();
        if lag == Some(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lag, Some(5), "five messages wait");
    let mut consumer = binder
        .consumer("lagging", Some("g"), &options)
        .await
        .unwrap();
    for _ in 0..5 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap();
        delivery.ack().await.unwrap();
    }
    for _ in 0..200 {
        lag = binder.lag("lagging", "g", &options).await.unwrap();
        if lag == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lag, Some(0), "none waits once they are handled");
    consumer.close().await;
}

/// Acknowledged by the broker, nothing is lost when it is killed and restarted on its data
/// (`restart` does both, and returns a binder on the new broker with whatever must live as
/// long as it): a group made before the kill receives every message after the restart.
pub async fn nothing_acknowledged_is_lost_across_a_restart<B, G, R, Fut>(binder: B, restart: R)
where
    B: Binder + Clone,
    R: FnOnce(B) -> Fut,
    Fut: std::future::Future<Output = (B, G)>,
{
    let options = msa_stream::binder::ConsumerOptions::default();
    let durable = binder.consumer("kept", Some("g"), &options).await.unwrap();
    drop(durable);
    let producer = StreamBuilder::new(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();
    for n in 0..50u32 {
        producer.send("kept", n).await.unwrap();
    }
    producer.shutdown().await;
    drop(producer);
    let (binder, _alive) = restart(binder).await;
    let mut durable = binder.consumer("kept", Some("g"), &options).await.unwrap();
    let mut got = BTreeSet::new();
    while got.len() < 50 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), durable.next())
            .await
            .expect("every message after the restart")
            .unwrap();
        got.insert(String::from_utf8(delivery.envelope.payload.to_vec()).unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(got.len(), 50);
}
