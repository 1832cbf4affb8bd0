//! msa-registry against hostile clients: every request here is one an unauthenticated
//! client can send, and each once crashed the registry, stopped its leases expiring, or
//! grew its memory without bound. The registry answers 4xx with a reason and goes on.

use std::net::SocketAddr;
use std::time::Duration;

use msa_discovery::eureka::InstanceInfo;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use serde_json::{Value, json};

async fn serve(server: RegistryServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

fn instance(app: &str, id: &str) -> Value {
    json!({"instance": {
        "instanceId": id, "hostName": "host", "app": app, "ipAddr": "127.0.0.1",
        "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 10, "durationInSecs": 30}
    }})
}

/// POSTs a registration; the status and the answer's text.
async fn register(
    addr: SocketAddr,
    app: &str,
    body: impl Into<reqwest::Body>,
    xml: bool,
) -> (u16, String) {
    let kind = if xml {
        "application/xml"
    } else {
        "application/json"
    };
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/eureka/apps/{app}"))
        .header("content-type", kind)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    // An error's reason, from msa's error body.
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| body["message"].as_str().map(str::to_owned));
    (status, reason.unwrap_or(text))
}

async fn health(addr: SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/actuator/health"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_lease_near_the_clocks_end_is_clamped_to_an_hour() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let mut body = instance("ORDERS", "orders-1");
    body["instance"]["leaseInfo"]["durationInSecs"] = json!(u64::MAX);
    body["instance"]["leaseInfo"]["renewalIntervalInSecs"] = json!(u64::MAX - 1);
    let (status, text) = register(addr, "ORDERS", body.to_string(), false).await;
    assert_eq!(status, 204, "{text}");
    let one = reqwest::Client::new()
        .get(format!("http://{addr}/eureka/apps/ORDERS/orders-1"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["instance"]["leaseInfo"]["durationInSecs"], "3600");
    assert_eq!(
        one["instance"]["leaseInfo"]["renewalIntervalInSecs"],
        "3600"
    );
}

/// The sweep once panicked on `Instant + Duration` for such a lease, and its task died:
/// no lease expired again. Now the huge lease lasts an hour and the others still expire.
#[tokio::test(start_paused = true)]
async fn the_sweep_survives_huge_leases_and_keeps_expiring_others() {
    let store = Store::new(StoreConfig {
        self_preservation: false,
        ..StoreConfig::default()
    });
    RegistryServer::new(store.clone()).spawn_sweeper();
    let info = |id: &str, secs: u64| -> InstanceInfo {
        let mut body = instance("ORDERS", id);
        body["instance"]["leaseInfo"]["durationInSecs"] = json!(secs);
        serde_json::from_value(body["instance"].clone()).unwrap()
    };
    store.register("ORDERS", info("huge", u64::MAX)).unwrap();
    store.register("ORDERS", info("short", 2)).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = |store: &Store| -> Vec<String> {
        store
            .instances("orders")
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    assert_eq!(ids(&store), ["huge"], "the short lease expired");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        ids(&store).is_empty(),
        "the clamped lease expired after an hour"
    );
}

#[tokio::test]
async fn deeply_nested_bodies_are_refused_and_the_registry_goes_on() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    // Tens of thousands of levels, far under the body limit: once a stack overflow while
    // the value built from it was dropped, which aborted the whole registry.
    let depth = 50_000;
    let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let (status, text) = register(addr, "ORDERS", xml, true).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("deeper than 32"), "{text}");
    let json = format!(
        "{{\"instance\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (status, text) = register(addr, "ORDERS", json, false).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(health(addr).await, 200);
    // A real registration still works.
    let (status, text) =
        register(addr, "ORDERS", instance("ORDERS", "o-1").to_string(), false).await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test]
async fn oversized_fields_and_metadata_are_refused_with_the_reason() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let mut body = instance("ORDERS", &"x".repeat(1000));
    let (status, text) = register(addr, "ORDERS", body.to_string(), false).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "instanceId is 1000 bytes; the limit is 256")
    );

    body = instance("ORDERS", "orders-1");
    body["instance"]["metadata"] = json!({"blob": "y".repeat(20_000)});
    let (status, text) = register(addr, "ORDERS", body.to_string(), false).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("metadata is 20004 bytes; the limit is 16384"),
        "{text}"
    );

    // Metadata grown a little at a time stops at the same limit, all or nothing.
    let (status, _) = register(
        addr,
        "ORDERS",
        instance("ORDERS", "orders-1").to_string(),
        false,
    )
    .await;
    assert_eq!(status, 204);
    let http = reqwest::Client::new();
    let put = |key: String| {
        let http = http.clone();
        async move {
            let url = format!(
                "http://{addr}/eureka/apps/ORDERS/orders-1/metadata?{key}={}",
                "z".repeat(4000)
            );
            http.put(url).send().await.unwrap().status().as_u16()
        }
    };
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(put(format!("k{n}")).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 400, 400]);
}

#[tokio::test]
async fn the_instance_count_is_bounded_and_known_instances_still_renew() {
    let store = Store::new(StoreConfig {
        max_instances: 3,
        ..StoreConfig::default()
    });
    let addr = serve(RegistryServer::new(store)).await;
    for n in 0..3 {
        let (status, _) = register(
            addr,
            "ORDERS",
            instance("ORDERS", &format!("o-{n}")).to_string(),
            false,
        )
        .await;
        assert_eq!(status, 204);
    }
    let (status, text) =
        register(addr, "ORDERS", instance("ORDERS", "o-3").to_string(), false).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "the registry holds 3 instances, its limit")
    );
    // Registering again what is there is no new instance.
    let (status, _) = register(addr, "ORDERS", instance("ORDERS", "o-1").to_string(), false).await;
    assert_eq!(status, 204);
}

/// Application names that come and go (a client registering and cancelling under ever new
/// names) leave nothing behind: not in the listing, not in the delta past its bound, and
/// only a bounded number of remembered watch indexes.
#[tokio::test]
async fn apps_that_come_and_go_leave_nothing_behind() {
    let store = Store::new(StoreConfig {
        max_delta: 1000,
        ..StoreConfig::default()
    });
    for n in 0..3000 {
        let app = format!("CHURN-{n}");
        let info: InstanceInfo =
            serde_json::from_value(instance(&app, "x")["instance"].clone()).unwrap();
        store.register(&app, info).unwrap();
        store.cancel(&app, "x").unwrap();
    }
    assert!(store.applications().application.is_empty());
    let delta = store.delta();
    let changes: usize = delta.application.iter().map(|a| a.instance.len()).sum();
    assert!(changes <= 1000, "{changes} changes in the delta");
    // The newest gone applications keep their index; the oldest are forgotten.
    assert!(store.index("CHURN-2999") > 0);
    assert_eq!(store.index("CHURN-0"), 0);
}

#[tokio::test]
async fn a_made_up_method_is_counted_as_other() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let http = reqwest::Client::new();
    let answer = http
        .request(brew, format!("http://{addr}/actuator/health"))
        .send();
    assert_eq!(answer.await.unwrap().status(), 405);
    let scrape = http
        .get(format!("http://{addr}/actuator/prometheus"))
        .send();
    let scrape = scrape.await.unwrap().text().await.unwrap();
    assert!(!scrape.contains("BREW"), "{scrape}");
    assert!(scrape.contains(r#"method="OTHER""#), "{scrape}");
}

mod common;
#[path = "../../tests/support/listeners.rs"]
mod listeners;

/// An msa-registry process with the probes' limits and a management listener; its
/// main and management addresses.
fn registry_with_limits(more: &[&str]) -> (common::Registry, SocketAddr, SocketAddr) {
    let (port, management) = (common::free_port(), common::free_port());
    let management_bind = format!("127.0.0.1:{management}");
    let mut args = vec!["--management-bind", &management_bind];
    args.extend(listeners::FLAGS);
    args.extend(more);
    let registry = common::Registry::start_with(port, &args);
    let main = SocketAddr::from(([127, 0, 0, 1], port));
    (registry, main, management_bind.parse().unwrap())
}

#[tokio::test]
async fn every_listener_bounds_slow_idle_and_surplus_connections() {
    let (_registry, main, management) = registry_with_limits(&[]);
    listeners::the_listener_contract_holds(main, management).await;
}

#[path = "../../tests/support/tls.rs"]
mod tls;

#[tokio::test]
async fn the_ssl_flags_serve_https() {
    let ca = tls::TestCa::new();
    let flags = tls::server_flags(&ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_registry, main, _) = registry_with_limits(&flags);
    tls::serves_https_only(main, &ca, "/eureka/apps").await;
}

#[tokio::test]
async fn readiness_goes_down_on_sigterm_before_the_registry_drains() {
    let (registry, main, _) = registry_with_limits(&["--shutdown-grace", "3s"]);
    listeners::wait_until_listening(main).await;
    listeners::readiness_goes_down_on_sigterm(registry.pid(), main).await;
}

#[tokio::test]
async fn three_thousand_apps_registered_and_cancelled_leave_no_listing_and_little_memory() {
    let port = common::free_port();
    let registry = common::Registry::start(port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    listeners::wait_until_listening(addr).await;
    let http = reqwest::Client::new();
    let churn = |range: std::ops::Range<usize>| {
        let http = http.clone();
        async move {
            for n in range {
                let app = format!("CHURN-{n}");
                let (status, _) =
                    register(addr, &app, instance(&app, "x").to_string(), false).await;
                assert_eq!(status, 204);
                let gone = http
                    .delete(format!("http://{addr}/eureka/apps/{app}/x"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(gone.status(), 200);
            }
        }
    };
    churn(0..200).await; // warm up the connections and the allocator
    let before = listeners::rss(registry.pid());
    let tasks: Vec<_> = (0..4)
        .map(|t| tokio::spawn(churn(200 + t * 700..200 + (t + 1) * 700)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = listeners::rss(registry.pid());
    let listing: Value = http
        .get(format!("http://{addr}/eureka/apps"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let apps = &listing["applications"]["application"];
    assert!(
        apps.as_array().is_none_or(|a| a.is_empty()),
        "cancelled apps are listed: {apps}"
    );
    let growth = after.saturating_sub(before);
    println!(
        "3,000 apps registered and cancelled: RSS {:.1} MB -> {:.1} MB (+{:.1} MB)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        growth as f64 / 1e6
    );
    assert!(growth < 16_000_000, "grew {growth} bytes");
}

#[tokio::test]
async fn out_of_file_descriptors_the_registry_pauses_instead_of_spinning() {
    let port = common::free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = listeners::with_few_descriptors(env!("CARGO_BIN_EXE_msa-registry"))
        .args(["--bind", &bind])
        .spawn()
        .unwrap();
    listeners::out_of_descriptors_it_pauses(child.id(), bind.parse().unwrap()).await;
    let _ = child.kill();
    let _ = child.wait();
}
