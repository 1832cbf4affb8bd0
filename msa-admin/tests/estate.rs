//! The estate against a real msa-registry (in process, over HTTP) and real instances on
//! 127.0.0.1: instances come and go with the registry, an instance that stops is seen
//! within 2 s, breakers, rates and the graph come from the instances' scrapes, hostile
//! instances and requests are bounded, and the pages need their login beyond loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msa_admin::Admin;
use msa_admin::estate::{EstateConfig, InstanceSummary};
use msa_admin::otlp::Limits;
use msa_core::ServiceInstance;
use msa_core::actuator::Actuator;
use msa_discovery::discovery::RegistryDiscovery;
use msa_discovery::registration::Registration;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use serde_json::{Value, json};

async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, task)
}

async fn registry() -> String {
    let server = RegistryServer::new(Store::new(StoreConfig::default()));
    let (addr, _) = serve(server.router()).await;
    format!("http://{addr}/eureka")
}

fn admin() -> Admin {
    Admin::new(
        EstateConfig {
            health_every: Duration::from_millis(100),
            scrape_every: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            max_body: 64 << 10,
            ..EstateConfig::default()
        },
        Limits::default(),
    )
}

/// Waits (up to `within`) until an instance of `service` satisfies `done`.
async fn until(
    admin: &Admin,
    within: Duration,
    what: &str,
    done: impl Fn(Option<&InstanceSummary>) -> bool,
    service: &str,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let overview = admin.estate().overview();
        let found = overview
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.instances.first());
        if done(found) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never within {within:?}: {what}; the estate: {overview:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `orders-1`, served by `router` and registered in a registry of its own, and an admin
/// following that registry that sees it UP.
struct Watched {
    admin: Admin,
    registration: Registration,
    server: tokio::task::JoinHandle<()>,
}

async fn watched(router: Router) -> Watched {
    let base = registry().await;
    let (addr, server) = serve(router).await;
    let registration = Registration::new(
        &base,
        ServiceInstance::new("orders", "127.0.0.1", addr.port()).with_id("orders-1"),
    );
    registration.register().await.unwrap();
    let admin = admin();
    admin
        .estate()
        .follow(RegistryDiscovery::new(&base).catalog());
    until(
        &admin,
        Duration::from_secs(5),
        "orders-1 UP",
        |i| i.is_some_and(|i| i.health == "UP"),
        "orders",
    )
    .await;
    Watched {
        admin,
        registration,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_come_and_go_with_the_registry_and_their_health() {
    let Watched {
        admin,
        registration,
        server,
    } = watched(Actuator::new("orders").version("1.2.3").router()).await;
    until(
        &admin,
        Duration::from_secs(5),
        "orders-1 with its version",
        |i| i.is_some_and(|i| i.version.as_deref() == Some("1.2.3")),
        "orders",
    )
    .await;

    // The process stops (no deregistration): seen within 2 s.
    server.abort();
    until(
        &admin,
        Duration::from_secs(2),
        "orders-1 unreachable",
        |i| i.is_some_and(|i| i.health == "UNREACHABLE" && i.error.is_some()),
        "orders",
    )
    .await;
    // Deregistered: gone from the estate.
    registration.deregister().await.unwrap();
    until(
        &admin,
        Duration::from_secs(2),
        "orders gone",
        |i| i.is_none(),
        "orders",
    )
    .await;
}

/// An instance whose scrape and environment the test writes.
#[derive(Clone, Default)]
struct Scripted {
    prometheus: Arc<Mutex<String>>,
}

fn scripted(instance: &Scripted) -> Router {
    let text = instance.prometheus.clone();
    Router::new()
        .route(
            "/actuator/health",
            get(|| async { axum::Json(json!({"status": "UP"})) }),
        )
        .route(
            "/actuator/prometheus",
            get(move || {
                let text = text.lock().unwrap().clone();
                async move { text }
            }),
        )
        .route(
            "/actuator/env",
            get(|| async {
                axum::Json(json!({
                    "activeProfiles": [],
                    "propertySources": [{ "name": "file:orders.yml", "properties": {
                        "spring.datasource.password": { "value": "hunter2" },
                        "spring.datasource.url": { "value": "postgres://app:hunter2@db/orders" },
                    }}]
                }))
            }),
        )
}

fn scrape(breaker: &str, served: u64, calls: u64, failed: u64) -> String {
    format!(
        "http_server_requests_seconds_count{{uri=\"/orders\",status=\"201\",outcome=\"SUCCESS\"}} {served}\n\
         http_server_requests_seconds_bucket{{uri=\"/orders\",status=\"201\",le=\"0.05\"}} {served}\n\
         http_server_requests_seconds_bucket{{uri=\"/orders\",status=\"201\",le=\"+Inf\"}} {served}\n\
         http_client_requests_seconds_count{{client_name=\"payments\",status=\"201\",outcome=\"SUCCESS\"}} {calls}\n\
         http_client_requests_seconds_count{{client_name=\"payments\",status=\"503\",outcome=\"SERVER_ERROR\"}} {failed}\n\
         resilience4j_circuitbreaker_state{{name=\"payments\",state=\"{breaker}\"}} 1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_rates_and_the_graph_come_from_the_scrapes() {
    let instance = Scripted::default();
    *instance.prometheus.lock().unwrap() = scrape("closed", 0, 0, 0);
    let Watched { admin, .. } = watched(scripted(&instance)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Traffic, half of orders' calls to payments failing, and the breaker opening.
    *instance.prometheus.lock().unwrap() = scrape("open", 100, 50, 50);
    until(
        &admin,
        Duration::from_secs(5),
        "the breaker OPEN with traffic",
        |i| {
            i.is_some_and(|i| {
                i.breakers_open == [("payments".to_owned(), "OPEN".to_owned())]
                    && i.window.rate > 0.0
            })
        },
        "orders",
    )
    .await;
    let detail = admin.estate().instance("orders", "orders-1").unwrap();
    let breaker = &detail.breakers["payments"];
    assert_eq!(breaker.state, "OPEN");
    let transitions: Vec<(&str, &str)> = breaker
        .transitions
        .iter()
        .map(|t| (t.from.as_str(), t.to.as_str()))
        .collect();
    assert_eq!(transitions, [("CLOSED", "OPEN")]);
    assert!(!detail.history.is_empty());
    assert!(detail.summary.window.p99_ms.unwrap() <= 50.0);
    let graph = admin.estate().graph();
    let edge = graph
        .edges
        .iter()
        .find(|e| e.from == "orders" && e.to == "payments")
        .expect("the orders → payments edge");
    assert!(edge.window.rate > 0.0);
    assert!((edge.window.error_pct - 50.0).abs() < 1e-6, "{edge:?}");
    assert!(graph.nodes.iter().any(|n| n.name == "payments"));

    // Through the API: the environment with its secrets masked.
    let (pages, _) = serve(admin.router(None)).await;
    let env: Value = reqwest::get(format!("http://{pages}/api/instances/orders/orders-1/env"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = env.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("******"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_instances_and_requests_are_bounded() {
    let instance = Scripted::default();
    // A scrape past the admin's body bound (64 KiB here).
    *instance.prometheus.lock().unwrap() = "# padding\n".repeat(20_000);
    let Watched { admin, .. } = watched(scripted(&instance)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detail = admin.estate().instance("orders", "orders-1").unwrap();
    assert!(detail.history.is_empty(), "an oversized scrape is not read");

    let (pages, _) = serve(admin.router(None)).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{pages}{path}");
    let set = "/api/instances/orders/orders-1/loggers/shop::orders";
    // A form (what another site could make a browser send) is refused.
    let form = http
        .post(url(set))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("configuredLevel=DEBUG")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    for (body, why) in [
        (json!({"configuredLevel": "LOUD"}), "an unknown level"),
        (json!({"level": "DEBUG"}), "no level"),
    ] {
        let refused = http.post(url(set)).json(&body).send().await.unwrap();
        assert_eq!(refused.status(), 400, "{why}");
        let reason: Value = refused.json().await.unwrap();
        assert!(
            reason["message"]
                .as_str()
                .unwrap()
                .contains("configuredLevel"),
            "{reason}"
        );
    }
    let long = format!("/api/instances/orders/orders-1/loggers/{}", "a".repeat(300));
    let refused = http
        .post(url(&long))
        .json(&json!({"configuredLevel": "DEBUG"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let unknown = http
        .get(url("/api/instances/orders/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Without a login, only loopback names: not another site's name resolving here.
    let rebound = http
        .get(url("/api/estate"))
        .header("host", format!("evil.example:{}", pages.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    let named = http
        .get(url("/api/estate"))
        .header("host", format!("localhost:{}", pages.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    // The pages come with a policy that keeps other sites' scripts and frames out.
    let page = http.get(url("/traces/abc")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_need_their_login_and_the_binary_refuses_to_go_public_without_one() {
    let admin = admin();
    let login =
        msa_core::http::Authorization::token("s3cret", "msa-admin").basic_challenge("msa-admin");
    let (pages, _) = serve(admin.router(Some(login))).await;
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("http://{pages}/api/estate"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "a browser asks for the credentials"
    );
    for request in [
        http.get(format!("http://{pages}/api/estate"))
            .bearer_auth("s3cret"),
        http.get(format!("http://{pages}/api/estate"))
            .basic_auth("anyone", Some("s3cret")),
    ] {
        assert_eq!(request.send().await.unwrap().status(), 200);
    }

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_msa-admin"))
        .args([
            "--registry",
            "http://127.0.0.1:1",
            "--bind",
            "0.0.0.0:0",
            "--otlp-bind",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("give the pages a login"), "{stderr}");
}
