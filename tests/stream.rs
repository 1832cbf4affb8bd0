//! Messaging in `msa::App`: bindings from `application.yml` (Spring Cloud Stream's keys),
//! a consumer in one app receiving what another app's HTTP handler sent through its
//! stream bridge, the binder's health, and a bad binding refused at start.

#![cfg(feature = "stream")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use msa::core::settings::Load;
use msa::stream::message::Message;
use msa::stream::stream::StreamBridge;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct OrderPlaced {
    id: u64,
}

fn app(dir: &Path, name: &str, yaml: &str) -> msa::App {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("application.yml"), yaml).unwrap();
    msa::App::new(name)
        .load(Load {
            dirs: vec![dir],
            env: Default::default(),
            profiles: Some(vec![]),
        })
        .bind("127.0.0.1:0")
        .handle_signals(false)
}

#[tokio::test]
async fn an_app_consumes_what_another_sends_through_its_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let recorded = seen.clone();
    let billing = app(
        dir.path(),
        "billing",
        "spring.cloud.stream.bindings.charge-in-0:\n  destination: app-orders\n  group: billing\n  consumer:\n    maxAttempts: 2\n",
    )
    .stream(move |stream| {
        stream.consumer("charge", move |order: Message<OrderPlaced>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(order.payload.id);
                Ok::<_, String>(())
            }
        })
    })
    .start()
    .await
    .unwrap();

    let orders = app(
        dir.path(),
        "orders",
        "msa.stream.bindings.placed:\n  destination: app-orders\n",
    )
    .stream(|stream| stream);
    let bridge = orders.stream_bridge();
    let router = Router::new()
        .route(
            "/orders",
            post(|State(bridge): State<StreamBridge>| async move {
                bridge
                    .send("placed", OrderPlaced { id: 42 })
                    .await
                    .map_err(|e| e.to_string())
            }),
        )
        .with_state(bridge);
    let orders = orders.router(router).start().await.unwrap();

    let placed = reqwest::Client::new()
        .post(format!("http://{}/orders", orders.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.lock().unwrap(), [42]);

    let health: Value = reqwest::get(format!("http://{}/actuator/health", billing.local_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["components"]["binders"]["status"], "UP", "{health}");
    assert_eq!(
        health["components"]["binders"]["details"]["binder"],
        "memory"
    );
    orders.shutdown().await.unwrap();
    billing.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_binding_that_does_not_read_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, wanted) in [
        (
            "spring.cloud.stream.bindings.x-in-0.consumer.max-attempts: 0\n",
            "spring.cloud.stream.bindings.x-in-0.consumer.max-attempts",
        ),
        (
            "msa.stream.bindings.x-in-0.consumer.max-atempts: 2\n",
            "max-atempts",
        ),
    ] {
        let error = app(dir.path(), "bad", yaml)
            .stream(|stream| stream)
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(wanted), "{error}");
        assert!(error.contains("application.yml"), "{error}");
    }
}

/// Two apps on the broker `binders` (Spring Cloud Stream's keys) chooses: what one sends
/// through its bridge the other's group consumes, and the health shows `binder`.
async fn two_apps_over(dir: &Path, binders: &str, tag: &str, binder: &str) {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let recorded = seen.clone();
    let destination = format!("{tag}-orders");
    let billing = app(
        dir,
        &format!("billing-{tag}"),
        &format!("{binders}  bindings:\n    charge-in-0:\n      destination: {destination}\n      group: billing\n"),
    )
    .stream(move |stream| {
        stream.consumer("charge", move |order: Message<OrderPlaced>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(order.payload.id);
                Ok::<_, String>(())
            }
        })
    })
    .start()
    .await
    .unwrap();
    let orders = app(
        dir,
        &format!("orders-{tag}"),
        &format!("{binders}  bindings:\n    placed:\n      destination: {destination}\n"),
    )
    .stream(|stream| stream);
    let bridge = orders.stream_bridge();
    let orders = orders.start().await.unwrap();
    bridge.send("placed", OrderPlaced { id: 7 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.lock().unwrap(), [7]);
    let health: Value = reqwest::get(format!("http://{}/actuator/health", billing.local_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["components"]["binders"]["details"]["binder"], binder);
    orders.shutdown().await.unwrap();
    billing.shutdown().await.unwrap();
}

/// Each of `yamls` fails the start, naming the binder key.
async fn refused(dir: &Path, yamls: &[String]) {
    for yaml in yamls {
        let error = app(dir, "unbound", yaml)
            .stream(|stream| stream)
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("default-binder"), "{error}");
    }
}

#[cfg(feature = "nats")]
#[path = "support/nats.rs"]
mod nats_server;

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_binder_comes_from_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let server = nats_server::Server::start(store.path(), nats_server::free_port());
    drop(server.binder().await); // the server answers
    let binders = format!(
        "spring.cloud.stream:\n  default-binder: broker\n  binders:\n    broker:\n      type: nats\n      url: {}\n",
        server.url()
    );
    two_apps_over(dir.path(), &binders, "nats", "nats").await;

    // A binder msa does not have, or a broker that does not answer, fails the start.
    refused(
        dir.path(),
        &[
            "spring.cloud.stream.default-binder: kafka\n".to_owned(),
            format!(
                "spring.cloud.stream:\n  default-binder: nats\n  binders:\n    nats:\n      url: nats://127.0.0.1:{}\n",
                nats_server::free_port()
            ),
        ],
    )
    .await;
}

#[cfg(feature = "rabbit")]
#[path = "support/rabbit.rs"]
mod rabbit_server;

#[cfg(feature = "rabbit")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbit_binder_comes_from_spring_boots_rabbitmq_keys() {
    let dir = tempfile::tempdir().unwrap();
    let broker = rabbit_server::shared();
    let vhost = rabbit_server::vhost();
    drop(broker.binder(&vhost).await); // the broker answers
    let binders = format!(
        "spring.rabbitmq:\n  host: 127.0.0.1\n  port: {}\n  username: msa\n  password: msa\n  virtual-host: {vhost}\nspring.cloud.stream:\n  default-binder: rabbit\n",
        broker.port
    );
    two_apps_over(dir.path(), &binders, "rabbit", "rabbit").await;
    refused(
        dir.path(),
        &[format!(
            "spring.rabbitmq.port: {}\nspring.cloud.stream.default-binder: rabbit\n",
            rabbit_server::free_port()
        )],
    )
    .await;
}
