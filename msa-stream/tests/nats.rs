//! The NATS JetStream binder against a real `nats-server` (Debian's, started here on a free
//! port with a throwaway store): the conformance suite (`suite/`, with a consumer process
//! killed mid-message), and no acknowledged message lost when the server is killed and
//! restarted.

#![cfg(feature = "nats")]

#[path = "../../tests/support/nats.rs"]
mod nats_server;
mod suite;

use nats_server::{Server, free_port};

use std::time::Duration;

use msa_stream::nats::NatsBinder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_nothing_acknowledged_is_lost_when_the_server_is_killed_and_restarted() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(store.path(), port);
    let binder = server.binder().await;
    suite::nothing_acknowledged_is_lost_across_a_restart(binder, |binder| async move {
        drop(binder);
        drop(server); // killed
        let server = Server::start(store.path(), port);
        (server.binder().await, (server, store))
    })
    .await;
}

/// A server on a free port with a throwaway store, and a binder connected to it.
async fn fresh() -> (tempfile::TempDir, Server, NatsBinder) {
    let store = tempfile::tempdir().unwrap();
    let server = Server::start(store.path(), free_port());
    let binder = server.binder().await;
    (store, server, binder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_every_group_gets_each_message_once_and_a_groups_instances_share_them() {
    let (_store, _server, binder) = fresh().await;
    suite::every_group_gets_each_message_once_and_a_groups_instances_share_them(&binder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_messages_of_one_key_stay_in_order_across_partitioned_instances() {
    let (_store, _server, binder) = fresh().await;
    suite::messages_of_one_key_stay_in_order_across_partitioned_instances(&binder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_a_payload_that_does_not_decode_is_dead_lettered_and_does_not_block_the_rest() {
    let (_store, _server, binder) = fresh().await;
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
    let (_store, _server, binder) = fresh().await;
    let reader = binder.clone();
    suite::a_failing_handler_is_retried_then_dead_lettered(&binder, || {
        let reader = reader.clone();
        async move { reader.dead_letters("payments", Some("g")).await.unwrap() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_graceful_shutdown_under_load_loses_nothing() {
    let (_store, _server, binder) = fresh().await;
    suite::graceful_shutdown_under_load_loses_nothing(&binder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_a_consumer_killed_mid_message_hands_it_to_another() {
    let (_store, server, binder) = fresh().await;
    suite::a_consumer_killed_mid_message_hands_it_to_another(
        &binder,
        "killed_child",
        &server.url(),
    )
    .await;
}

/// The consumer `suite_a_consumer_killed_mid_message_hands_it_to_another` kills (a
/// process of this binary; its group's ack wait is 1 s); without its environment variable
/// it does nothing.
#[tokio::test]
#[ignore = "run in a child process by suite_a_consumer_killed_mid_message_hands_it_to_another"]
async fn killed_child() {
    if let Ok(url) = std::env::var(suite::CHILD_BROKER) {
        let binder = NatsBinder::connect(&url)
            .await
            .unwrap()
            .ack_wait(Duration::from_secs(1));
        suite::hold_one_message(&binder).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_the_consumer_lag_is_what_waits_for_the_group() {
    let (_store, _server, binder) = fresh().await;
    suite::the_consumer_lag_is_what_waits_for_the_group(&binder).await;
}
