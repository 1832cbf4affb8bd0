//! `msa::App`'s actuator as Spring Boot's: log levels changed at run time, the settings by
//! source with secrets masked, metrics by Micrometer name, and the app's health reaching
//! the registry as its instance's status.

#![cfg(feature = "discovery")]

#[path = "support/registry.rs"]
mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msa::core::actuator::Health;
use msa::core::settings::Load;
use serde_json::{Value, json};

fn app(name: &str) -> msa::App {
    msa::App::new(name)
        .load(Load {
            dirs: vec![],
            env: Default::default(),
            profiles: Some(vec![]),
        })
        .bind("127.0.0.1:0")
        .handle_signals(false)
}

#[tokio::test]
async fn log_levels_change_at_run_time_through_the_loggers_endpoint() {
    let running = app("loggers-test").start().await.unwrap();
    let base = format!("http://{}/actuator/loggers", running.local_addr());
    let http = reqwest::Client::new();

    let all: Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        all["levels"],
        json!(["OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"])
    );
    assert!(
        all["loggers"]["ROOT"]["effectiveLevel"].is_string(),
        "{all}"
    );

    // Nothing traces this target yet; after the change it does, at once.
    assert!(!tracing::enabled!(target: "loggers_probe::deep", tracing::Level::TRACE));
    let set = http
        .post(format!("{base}/loggers_probe"))
        .json(&json!({ "configuredLevel": "TRACE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    assert!(tracing::enabled!(target: "loggers_probe::deep", tracing::Level::TRACE));
    let one: Value = http
        .get(format!("{base}/loggers_probe.deep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        one,
        json!({ "configuredLevel": null, "effectiveLevel": "TRACE" })
    );

    // Spring Boot Admin sends the actuator's own media type.
    let admin = http
        .post(format!("{base}/loggers_probe"))
        .header(
            "content-type",
            "application/vnd.spring-boot.actuator.v3+json",
        )
        .body(r#"{"configuredLevel":"DEBUG"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 204);

    // `null` gives the logger back to its parents.
    let reset = http
        .post(format!("{base}/loggers_probe"))
        .json(&json!({ "configuredLevel": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert!(!tracing::enabled!(target: "loggers_probe::deep", tracing::Level::TRACE));

    // Bad levels and names are refused with a reason; a client cannot grow the filter
    // without bound.
    let loud = http
        .post(format!("{base}/loggers_probe"))
        .json(&json!({ "configuredLevel": "LOUD" }))
        .send()
        .await
        .unwrap();
    assert_eq!(loud.status(), 400);
    assert!(loud.text().await.unwrap().contains("not a level"));
    let odd = http
        .post(format!("{base}/a%20b"))
        .json(&json!({ "configuredLevel": "INFO" }))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 400);
    let mut refused = None;
    for i in 0..300 {
        let answer = http
            .post(format!("{base}/flood_{i}"))
            .json(&json!({ "configuredLevel": "DEBUG" }))
            .send()
            .await
            .unwrap();
        if answer.status() != 204 {
            refused = Some((i, answer.status(), answer.text().await.unwrap()));
            break;
        }
    }
    let (at, status, reason) = refused.expect("a bound on loggers");
    assert!(at <= 256, "{at}");
    assert_eq!(status, 400);
    assert!(reason.contains("already have a level"), "{reason}");
    let huge = http
        .post(format!("{base}/x"))
        .body(vec![b' '; 64 * 1024])
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn env_lists_the_settings_by_source_with_secrets_masked_and_metrics_by_micrometer_name() {
    let running = app("env-test")
        .set("orders.max-quantity", 5)
        .set("orders.api-password", "hunter2")
        .set("orders.upstream", "http://user:pa55@example.com/x")
        .router(Router::new().route("/hello/{who}", get(|| async { "hello" })))
        .start()
        .await
        .unwrap();
    let base = format!("http://{}/actuator", running.local_addr());
    let text = reqwest::get(format!("{base}/env"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("pa55"),
        "{text}"
    );
    let env: Value = serde_json::from_str(&text).unwrap();
    let code = env["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "code")
        .unwrap();
    assert_eq!(code["properties"]["orders.max-quantity"]["value"], "5");
    assert_eq!(code["properties"]["orders.api-password"]["value"], "******");
    let one: Value = reqwest::get(format!("{base}/env/orders.max-quantity"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["property"], json!({ "source": "code", "value": "5" }));
    let missing = reqwest::get(format!("{base}/env/no.such.key"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    for _ in 0..3 {
        let hello = reqwest::get(format!("http://{}/hello/ann", running.local_addr()));
        assert_eq!(hello.await.unwrap().status(), 200);
    }
    let names: Value = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        names["names"]
            .as_array()
            .unwrap()
            .contains(&json!("http.server.requests")),
        "{names}"
    );
    let requests: Value = reqwest::get(format!(
        "{base}/metrics/http.server.requests?tag=uri:/hello/{{who}}&tag=method:GET"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(requests["baseUnit"], "seconds");
    assert_eq!(
        requests["measurements"][0],
        json!({ "statistic": "COUNT", "value": 3.0 })
    );
    let tags = requests["availableTags"].as_array().unwrap();
    assert!(
        tags.contains(&json!({ "tag": "outcome", "values": ["SUCCESS"] })),
        "{requests}"
    );
    let too_many = (0..20)
        .map(|i| format!("tag=k{i}:v"))
        .collect::<Vec<_>>()
        .join("&");
    let refused = reqwest::get(format!("{base}/metrics/http.server.requests?{too_many}"));
    assert_eq!(refused.await.unwrap().status(), 400);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_apps_health_reaches_the_registry_as_its_status() {
    let registry_addr = registry::serve_registry(true).await;
    let healthy = Arc::new(AtomicBool::new(true));
    let db = healthy.clone();
    let running = app("health-test")
        .registry(format!("http://{registry_addr}"))
        .lease(Duration::from_secs(1), Duration::from_secs(3))
        .actuator(move |actuator| {
            actuator.health_indicator("db", move || {
                let up = db.load(Ordering::SeqCst);
                async move { if up { Health::up() } else { Health::down() } }
            })
        })
        .start()
        .await
        .unwrap();
    let status = async |wanted: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let list = registry::registered(registry_addr, "HEALTH-TEST", 1).await;
            if list[0]["status"] == wanted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {wanted}: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    status("UP").await;
    healthy.store(false, Ordering::SeqCst);
    status("DOWN").await;
    healthy.store(true, Ordering::SeqCst);
    status("UP").await;

    // The registration is at hand while the app runs.
    let registration = running.registration().expect("registered");
    registration
        .set_status(msa::core::InstanceStatus::OutOfService)
        .await
        .unwrap();
    status("OUT_OF_SERVICE").await;
    registration.set_metadata("build", "42").await.unwrap();
    let list = registry::registered(registry_addr, "HEALTH-TEST", 1).await;
    assert_eq!(list[0]["metadata"]["build"], "42");

    // The health endpoint names the registration's state.
    let health: Value = reqwest::get(format!("http://{}/actuator/health", running.local_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["components"]["discoveryClient"]["status"], "UP",
        "{health}"
    );
    running.shutdown().await.unwrap();
}
