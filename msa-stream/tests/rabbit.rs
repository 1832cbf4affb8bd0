//! The RabbitMQ binder against a real `rabbitmq-server` (Debian's, started once for this
//! binary on free ports with a throwaway data directory; each test has its own virtual
//! host): the conformance suite (`suite/`), Spring Cloud Stream's topology read and written
//! by a plain AMQP client, and no acknowledged message lost when the broker is killed and
//! restarted on its data.

#![cfg(feature = "rabbit")]

#[path = "../../tests/support/rabbit.rs"]
mod rabbit_server;
mod suite;

use rabbit_server::{Broker, free_port, shared, vhost};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use msa_stream::message::Message;
use msa_stream::rabbit::RabbitBinder;
use msa_stream::stream::StreamBuilder;
use serde_json::json;
use suite::{Event, settings, until};

async fn binder() -> RabbitBinder {
    shared().binder(&vhost()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_every_group_gets_each_message_once_and_a_groups_instances_share_them() {
    suite::every_group_gets_each_message_once_and_a_groups_instances_share_them(&binder().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_messages_of_one_key_stay_in_order_across_partitioned_instances() {
    suite::messages_of_one_key_stay_in_order_across_partitioned_instances(&binder().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest() {
    let binder = binder().await;
    let reader = binder.clone();
    suite::a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest(
        &binder,
        || {
            let reader = reader.clone();
            async move { reader.dead_letters("events", Some("g")).await.unwrap() }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_a_failing_handler_is_retried_then_dead_lettered() {
    let binder = binder().await;
    let reader = binder.clone();
    suite::a_failing_handler_is_retried_then_dead_lettered(&binder, || {
        let reader = reader.clone();
        async move { reader.dead_letters("payments", Some("g")).await.unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_graceful_shutdown_under_load_loses_nothing() {
    suite::graceful_shutdown_under_load_loses_nothing(&binder().await).await;
}

/// A plain AMQP connection to `vhost`, as a Spring service or an operator's tool has.
async fn plain(broker: &Broker, vhost: &str) -> lapin::Channel {
    let connection = Connection::connect(&broker.url(vhost), ConnectionProperties::default())
        .await
        .unwrap();
    // The channel keeps its connection open.
    connection.create_channel().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_cloud_streams_topology_is_shared_with_plain_amqp_clients() {
    let broker = shared();
    let vhost = vhost();
    let binder = broker.binder(&vhost).await;
    let seen: Arc<Mutex<Vec<Message<Event>>>> = Arc::default();
    let sink = seen.clone();
    let stream = StreamBuilder::new(
        binder.clone(),
        settings(json!({ "bindings": {
            "bill-in-0": { "destination": "orders", "group": "billing" },
            "out": { "destination": "invoices" }
        } })),
    )
    .consumer("bill", move |message: Message<Event>| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(message);
            Ok::<_, String>(())
        }
    })
    .start()
    .await
    .unwrap();

    // In: published as Spring Cloud Stream publishes (the destination's topic exchange,
    // routing key = destination, contentType header and property, persistent).
    let channel = plain(broker, &vhost).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "contentType".into(),
        AMQPValue::LongString("application/json".into()),
    );
    headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    headers.insert("priority-level".into(), AMQPValue::LongInt(3));
    channel
        .basic_publish(
            "orders".into(),
            "orders".into(),
            BasicPublishOptions::default(),
            br#"{"key":"o-1","seq":7}"#,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    until("the Spring-style message handled", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let message = seen.lock().unwrap()[0].clone();
    assert_eq!(
        message.payload,
        Event {
            key: "o-1".into(),
            seq: 7
        }
    );
    assert_eq!(message.headers["tenant"], "acme");
    assert_eq!(message.headers["priority-level"], "3");
    assert_eq!(message.headers["contentType"], "application/json");

    // The group's queue is the durable `<destination>.<group>` with the DLX arguments
    // Spring declares (declaring it again with the same arguments succeeds; different
    // ones would close the channel).
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("DLX".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("orders.billing".into()),
    );
    let queue = channel
        .queue_declare(
            "orders.billing".into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .expect("the group's queue has Spring's arguments");
    assert_eq!(queue.consumer_count(), 1);
    channel
        .exchange_declare(
            "orders".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the destination is a durable topic exchange");

    // Out: a plain reader's queue `<destination>.<group>` bound as Spring binds it gets
    // what msa sends, with the contentType header and property.
    channel
        .exchange_declare(
            "invoices".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            "invoices.archive".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "invoices.archive".into(),
            "invoices".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    stream
        .send_message(
            "out",
            Message::new(Event {
                key: "i-1".into(),
                seq: 1,
            })
            .with_header("tenant", "acme"),
        )
        .await
        .unwrap();
    let mut got = None;
    for _ in 0..200 {
        got = channel
            .basic_get("invoices.archive".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = got
        .expect("msa's message in the plain reader's queue")
        .delivery;
    assert_eq!(got.routing_key.as_str(), "invoices");
    assert_eq!(
        serde_json::from_slice::<Event>(&got.data).unwrap(),
        Event {
            key: "i-1".into(),
            seq: 1
        }
    );
    assert_eq!(
        got.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*got.properties.delivery_mode(), Some(2));
    let headers = got.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner()["contentType"],
        AMQPValue::LongString("application/json".into())
    );
    assert_eq!(
        headers.inner()["tenant"],
        AMQPValue::LongString("acme".into())
    );
    stream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_nothing_acknowledged_is_lost_when_the_broker_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port, true);
    let binder = broker.binder("t0").await;
    suite::nothing_acknowledged_is_lost_across_a_restart(binder, |binder| async move {
        drop(binder);
        broker.kill();
        drop(broker);
        let broker = Broker::start(dir.path(), port, true);
        (broker.binder("t0").await, (broker, dir))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_a_consumer_killed_mid_message_hands_it_to_another() {
    let broker = shared();
    let vhost = vhost();
    let binder = broker.binder(&vhost).await;
    suite::a_consumer_killed_mid_message_hands_it_to_another(
        &binder,
        "killed_child",
        &broker.url(&vhost),
    )
    .await;
}

/// The consumer `suite_a_consumer_killed_mid_message_hands_it_to_another` kills (a
/// process of this binary); without its environment variable it does nothing.
#[tokio::test]
#[ignore = "run in a child process by suite_a_consumer_killed_mid_message_hands_it_to_another"]
async fn killed_child() {
    if let Ok(url) = std::env::var(suite::CHILD_BROKER) {
        suite::hold_one_message(&RabbitBinder::connect(&url).await.unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_the_consumer_lag_is_what_waits_for_the_group() {
    suite::the_consumer_lag_is_what_waits_for_the_group(&binder().await).await;
}
