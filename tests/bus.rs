//! Spring Cloud Bus in `msa::App`: `/actuator/busrefresh` and `/actuator/busenv` reach
//! every instance (or those a destination pattern names) over the app's stream, events in
//! Spring Cloud Bus's JSON act on msa apps, each instance acknowledges what it acted on,
//! and bad requests get a 400 with the reason. The apps share the process's in-memory
//! binder (one test: every test of a binary would share its `springCloudBus`).

#![cfg(all(feature = "stream", feature = "config"))]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use msa::core::settings::Load;
use msa::stream::bus::RemoteEvent;
use msa::stream::memory::MemoryBinder;
use msa::stream::message::{Envelope, Message};
use msa::stream::stream::StreamBuilder;
use msa_stream::binder::Binder as _;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Root {
    shop: Shop,
}

#[derive(Debug, Deserialize)]
struct Shop {
    banner: String,
}

struct Instance {
    running: msa::Running,
    refreshes: Arc<AtomicUsize>,
    live: msa::config::client::LiveConfig<Root>,
}

async fn instance(dir: &Path, config: SocketAddr, name: &str, id: &str, extra: &str) -> Instance {
    let dir = dir.join(id.replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("application.yml"),
        format!(
            "spring:\n  application:\n    name: {name}\n  config:\n    import: \"configserver:http://{config}\"\n  cloud:\n    bus:\n      id: \"{id}\"\n{extra}"
        ),
    )
    .unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counted = refreshes.clone();
    let mut app = msa::App::new(name)
        .load(Load {
            dirs: vec![dir],
            env: Default::default(),
            profiles: Some(vec![]),
        })
        .bind("127.0.0.1:0")
        .handle_signals(false)
        .actuator(move |actuator| {
            actuator.on_refresh("counted", move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Vec::new()) }
            })
        })
        .stream(|stream| stream);
    let live = app.live_config::<Root>().await.unwrap();
    let running = app.start().await.unwrap();
    Instance {
        running,
        refreshes,
        live,
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_events_reach_every_instance_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("application.yml"), "shop:\n  banner: none\n").unwrap();
    let server = msa_config::server::ConfigServer::new(
        msa_config::server::DirRepository::open(&repo).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });

    // Watches the bus as another instance would: every event and acknowledgement.
    let (heard, mut hear) = tokio::sync::mpsc::unbounded_channel();
    let watcher = StreamBuilder::new(
        MemoryBinder::shared(),
        serde_json::from_value(serde_json::json!({ "bindings": {
            "watch-in-0": { "destination": "springCloudBus" }
        } }))
        .unwrap(),
    )
    .consumer("watch", move |event: Message<RemoteEvent>| {
        let heard = heard.clone();
        async move { heard.send(event.payload).map_err(|e| e.to_string()) }
    })
    .start()
    .await
    .unwrap();

    let orders_1 = instance(dir.path(), config, "orders", "orders:default:1", "").await;
    let orders_2 = instance(dir.path(), config, "orders", "orders:default:2", "").await;
    // billing guards its management endpoints with a token.
    let billing = instance(
        dir.path(),
        config,
        "billing",
        "billing:default:1",
        "msa:\n  management:\n    token: s3cret\n",
    )
    .await;
    let all = [&orders_1, &orders_2, &billing];
    let counts = || all.map(|i| i.refreshes.load(Ordering::SeqCst));
    let http = reqwest::Client::new();
    let post = |instance: &Instance, path: &str| {
        http.post(format!(
            "http://{}/actuator/{path}",
            instance.running.local_addr()
        ))
    };

    // The bus endpoints are management operations: without the token, nothing is sent.
    let response = post(&billing, "busrefresh").send().await.unwrap();
    assert_eq!(response.status(), 401);

    // busrefresh from billing to `orders:**`: both orders instances refresh, billing
    // does not; each acknowledges on the bus.
    let response = post(&billing, "busrefresh/orders:**")
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually("both orders instances refreshed", || counts() == [1, 1, 0]).await;
    let mut acks = std::collections::BTreeSet::new();
    while acks.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), hear.recv())
            .await
            .expect("acknowledgements")
            .unwrap();
        if let RemoteEvent::AckRemoteApplicationEvent { head, event, .. } = event {
            assert_eq!(
                event.as_deref(),
                Some("org.springframework.cloud.bus.event.RefreshRemoteApplicationEvent")
            );
            acks.insert(head.origin_service);
        }
    }
    assert_eq!(
        acks.into_iter().collect::<Vec<_>>(),
        ["orders:default:1", "orders:default:2"]
    );

    // busrefresh with no destination: every instance, the sender included.
    let response = post(&orders_1, "busrefresh").send().await.unwrap();
    assert_eq!(response.status(), 204);
    eventually("every instance refreshed", || counts() == [2, 2, 1]).await;

    // busenv: the property reaches every instance's live settings, over the config
    // server's value.
    let response = post(&orders_2, "busenv")
        .json(&serde_json::json!({ "name": "shop.banner", "value": "sale" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually("the banner changed everywhere", || {
        all.iter().all(|i| i.live.get().shop.banner == "sale")
    })
    .await;
    // `/actuator/env` lists it as the source in force.
    let env: serde_json::Value = http
        .get(format!(
            "http://{}/actuator/env/shop.banner",
            orders_1.running.local_addr()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["property"]["source"], "busenv", "{env}");
    assert_eq!(env["property"]["value"], "sale", "{env}");

    // An event in Spring Cloud Bus's own JSON, as a Spring service sends it.
    let spring = br#"{"type":"RefreshRemoteApplicationEvent","timestamp":1700000000000,"originService":"config-server:8888:a1","destinationService":"billing:**","id":"7c1e6c43-2b1e-4bd4-9d7a-0f3f7b0c8a11"}"#;
    let mut envelope = Envelope::new(&spring[..]);
    envelope
        .headers
        .insert("contentType".into(), "application/json".into());
    MemoryBinder::shared()
        .producer("springCloudBus", &Default::default())
        .await
        .unwrap()
        .send(envelope)
        .await
        .unwrap();
    eventually("billing refreshed by Spring's event", || {
        counts() == [2, 2, 2]
    })
    .await;

    // Bad requests: the reason, and nothing sent.
    let response = post(&orders_1, "busenv").body("{").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let long = "x".repeat(300);
    let response = post(&orders_1, &format!("busrefresh/{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("at most"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counts(), [2, 2, 2]);

    watcher.shutdown().await;
    for instance in [orders_1, orders_2, billing] {
        instance.running.shutdown().await.unwrap();
    }
}
