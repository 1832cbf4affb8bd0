//! What every binder must do, as one suite: groups, competing instances, per-key order
//! across partitioned instances, retries then dead letters, undecodable payloads, a
//! consumer that dies mid-message, graceful shutdown under load (the trace crossing from
//! producer to consumer is `tests/trace.rs`, a binary of its own: it installs a
//! subscriber). The binder-independent part is `suite/`, which the broker binders run
//! against their brokers too; what only the in-process binder can show exactly (retry
//! timings on a paused clock, its queues) is here.

mod suite;

use suite::{Event, Seen, send_events, settings, until};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msa_stream::binder::{Binder, ConsumerOptions, ProducerOptions};
use msa_stream::config::StreamSettings;
use msa_stream::memory::MemoryBinder;
use msa_stream::message::{EXCEPTION_KIND, EXCEPTION_MESSAGE, Envelope, Message};
use msa_stream::stream::StreamBuilder;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_with_backoff_then_dead_lettered_with_the_reason() {
    let binder = MemoryBinder::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let stream = StreamBuilder::new(
        binder.clone(),
        settings(json!({ "bindings": { "pay-in-0": {
            "destination": "payments", "group": "g",
            "consumer": { "max-attempts": 4, "back-off-initial-interval": "100ms",
                          "back-off-multiplier": 2.0, "back-off-max-interval": "300ms" }
        } } })),
    )
    .consumer("pay", move |message: Message<Event>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(tokio::time::Instant::now());
            if message.payload.seq == 0 {
                Err("card declined")
            } else {
                Ok(())
            }
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
    until("dead-lettered", || {
        !binder.dead_letters("payments", Some("g")).is_empty()
    })
    .await;
    let times = attempts.lock().unwrap().clone();
    assert_eq!(times.len(), 4, "max-attempts in all");
    let waits: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(
        waits,
        [100, 200, 300],
        "exponential, capped at the max interval"
    );
    let dead = binder.dead_letters("payments", Some("g"));
    assert_eq!(dead[0].headers[EXCEPTION_MESSAGE], "card declined");
    assert_eq!(dead[0].headers[EXCEPTION_KIND], "handler");
    assert_eq!(dead[0].headers["x-attempts"], "4");
    let original: Event = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(original.seq, 0, "the original payload, intact");
    assert_eq!(
        binder.waiting("payments", "g"),
        0,
        "acknowledged, not redelivered"
    );
    stream.shutdown().await;
}

#[tokio::test]
async fn a_message_its_consumer_never_settled_goes_to_another_member_of_the_group() {
    let binder = MemoryBinder::new();
    let options = ConsumerOptions::default();
    let mut dying = binder
        .consumer("events", Some("g"), &options)
        .await
        .unwrap();
    let mut other = binder
        .consumer("events", Some("g"), &options)
        .await
        .unwrap();
    binder
        .producer("events", &ProducerOptions::default())
        .await
        .unwrap()
        .send(Envelope::new("1"))
        .await
        .unwrap();
    // One of the two takes it; that one dies holding it.
    let held = tokio::select! {
        d = dying.next() => d.unwrap(),
        d = other.next() => { std::mem::swap(&mut dying, &mut other); d.unwrap() }
    };
    assert_eq!(held.redelivered, 0);
    drop(held);
    drop(dying);
    let again = tokio::time::timeout(Duration::from_secs(5), other.next())
        .await
        .expect("delivered again")
        .unwrap();
    assert_eq!(&again.envelope.payload[..], b"1");
    assert_eq!(again.redelivered, 1);
    again.ack().await.unwrap();
    assert_eq!(binder.waiting("events", "g"), 0);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_under_load_loses_nothing() {
    let binder = MemoryBinder::new();
    let seen: Seen = Arc::default();
    let slow = |who: &str, seen: &Seen| {
        let (who, seen) = (who.to_owned(), seen.clone());
        StreamBuilder::new(
            binder.clone(),
            settings(
                json!({ "bindings": { "in-in-0": { "destination": "events", "group": "g",
                "consumer": { "concurrency": 4 } } } }),
            ),
        )
        .consumer("in", move |message: Message<Event>| {
            let (who, seen) = (who.clone(), seen.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                seen.lock().unwrap().push((who, message.payload));
                Ok::<_, String>(())
            }
        })
    };
    let first = slow("first", &seen).start().await.unwrap();
    let producer = StreamBuilder::new(binder.clone(), StreamSettings::default())
        .start()
        .await
        .unwrap();
    send_events(&producer, "events", 10, 50).await;
    until("some handled", || seen.lock().unwrap().len() >= 50).await;
    first.shutdown().await;
    let by_first = seen.lock().unwrap().len();
    assert!(by_first < 500, "stopped before the end: {by_first}");
    let second = slow("second", &seen).start().await.unwrap();
    until("the rest handled", || seen.lock().unwrap().len() >= 500).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let all: BTreeSet<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| (e.key.clone(), e.seq))
        .collect();
    assert_eq!(all.len(), 500, "every message handled");
    assert_eq!(seen.lock().unwrap().len(), 500, "none twice");
    for stream in [second, producer] {
        stream.shutdown().await;
    }
}

#[tokio::test]
async fn every_group_gets_each_message_once_and_a_groups_instances_share_them() {
    suite::every_group_gets_each_message_once_and_a_groups_instances_share_them(
        &MemoryBinder::new(),
    )
    .await;
}

#[tokio::test]
async fn messages_of_one_key_stay_in_order_across_partitioned_instances() {
    suite::messages_of_one_key_stay_in_order_across_partitioned_instances(&MemoryBinder::new())
        .await;
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest() {
    let binder = MemoryBinder::new();
    let reader = binder.clone();
    suite::a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest(
        &binder,
        || {
            let reader = reader.clone();
            async move { reader.dead_letters("events", Some("g")) }
        },
    )
    .await;
}

#[tokio::test]
async fn suite_a_failing_handler_is_retried_then_dead_lettered() {
    let binder = MemoryBinder::new();
    let reader = binder.clone();
    suite::a_failing_handler_is_retried_then_dead_lettered(&binder, || {
        let reader = reader.clone();
        async move { reader.dead_letters("payments", Some("g")) }
    })
    .await;
}

#[tokio::test]
async fn suite_graceful_shutdown_under_load_loses_nothing() {
    suite::graceful_shutdown_under_load_loses_nothing(&MemoryBinder::new()).await;
}

#[tokio::test]
async fn suite_the_consumer_lag_is_what_waits_for_the_group() {
    suite::the_consumer_lag_is_what_waits_for_the_group(&MemoryBinder::new()).await;
}
