//! The actuator endpoints over real HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use msa_core::actuator::{Actuator, Group, Health};
use msa_core::http::ServerLayer;

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn health_turns_503_when_an_indicator_fails_and_back() {
    let db_up = Arc::new(AtomicBool::new(true));
    let flag = db_up.clone();
    let actuator = Actuator::new("health-test")
        .health_indicator("db", move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    Health::up().with_detail("pool", 4)
                } else {
                    Health::down().with_detail("error", "connection refused")
                }
            }
        })
        .health_indicator_in("disk", &[Group::Liveness], || async { Health::up() });
    let availability = actuator.availability();
    let addr = common::serve(actuator.router()).await;
    let url = |path: &str| format!("http://{addr}/actuator/health{path}");

    let (status, body) = get_json(&url("")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "UP");
    assert_eq!(body["components"]["db"]["details"]["pool"], 4);
    assert_eq!(body["components"]["disk"]["status"], "UP");

    db_up.store(false, Ordering::SeqCst);
    let (status, body) = get_json(&url("")).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["components"]["db"]["status"], "DOWN");
    assert_eq!(
        body["components"]["db"]["details"]["error"],
        "connection refused"
    );
    // db is a readiness indicator: readiness fails, liveness does not.
    let (status, body) = get_json(&url("/readiness")).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("DOWN")));
    assert!(body["components"].get("disk").is_none());
    let (status, body) = get_json(&url("/liveness")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("UP")));
    assert!(body["components"].get("db").is_none());
    let (status, body) = get_json(&url("/db")).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("DOWN")));

    db_up.store(true, Ordering::SeqCst);
    let (status, body) = get_json(&url("")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("UP")));

    // Refusing traffic (as shutdown does) takes readiness out of service.
    availability.set_ready(false);
    let (status, body) = get_json(&url("/readiness")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("OUT_OF_SERVICE"))
    );
    assert_eq!(
        body["components"]["readinessState"]["details"]["state"],
        "REFUSING_TRAFFIC"
    );
    let (status, _) = get_json(&url("/liveness")).await;
    assert_eq!(status, 200);

    let (status, body) = get_json(&url("/nope")).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn prometheus_counts_exactly_the_requests_made_by_route_template() {
    let router = Router::new()
        .route("/prom-test/items/{id}", get(|| async { "item" }))
        .route(
            "/prom-test/fail",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .merge(Actuator::new("prom-test").router())
        .layer(ServerLayer::new());
    let addr = common::serve(router).await;
    for id in ["1", "2", "3"] {
        let r = reqwest::get(format!("http://{addr}/prom-test/items/{id}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = reqwest::get(format!("http://{addr}/prom-test/fail"))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
    let r = reqwest::get(format!("http://{addr}/prom-test/unrouted/42"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let response = reqwest::get(format!("http://{addr}/actuator/prometheus"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let scrape = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e:?}\n{text}"));
    let requests = &scrape.families["http_server_requests_seconds"];

    let count = |route: &str, status: &str| -> u64 {
        let samples: Vec<_> = requests
            .iter_samples()
            .filter(|s| {
                let labels = s.get_labelset().unwrap();
                labels.get_label_value("method") == Some("GET")
                    && labels.get_label_value("uri") == Some(route)
                    && labels.get_label_value("status") == Some(status)
            })
            .collect();
        assert!(samples.len() <= 1, "one series per label set");
        samples.first().map_or(0, |s| match &s.value {
            openmetrics_parser::PrometheusValue::Histogram(h) => {
                let mut previous = 0.0;
                for bucket in &h.buckets {
                    assert!(bucket.count.as_f64() >= previous, "buckets are cumulative");
                    previous = bucket.count.as_f64();
                }
                let inf = h.buckets.iter().find(|b| b.upper_bound == f64::INFINITY);
                assert_eq!(
                    inf.map(|b| b.count.as_f64() as u64),
                    h.count,
                    "+Inf bucket = count"
                );
                h.count.expect("a _count sample")
            }
            other => panic!("expected a histogram, got {other:?}"),
        })
    };
    assert_eq!(count("/prom-test/items/{id}", "200"), 3);
    assert_eq!(count("/prom-test/fail", "500"), 2);
    assert!(text.contains("outcome=\"SERVER_ERROR\",status=\"500\",uri=\"/prom-test/fail\""));
    assert_eq!(count("NOT_FOUND", "404"), 1);
    // Raw paths never become label values.
    assert!(!text.contains("/prom-test/items/1"));
    assert!(!text.contains("/prom-test/unrouted"));
    // The text's own _count line agrees.
    assert!(text.contains(
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/prom-test/items/{id}\"} 3"
    ));
    // Process metrics come with the registry.
    assert!(
        scrape
            .families
            .contains_key("process_resident_memory_bytes")
    );
}

#[tokio::test]
async fn info_shows_name_version_build_and_custom_entries() {
    let actuator = Actuator::new("info-test")
        .version("1.2.3")
        .build_info(msa_core::actuator::BuildInfo {
            git_commit: Some("abc123".into()),
            git_branch: Some("main".into()),
            ..msa_core::build_info!()
        })
        .info("team", "checkout")
        .info("limits", serde_json::json!({ "max": 5 }));
    let addr = common::serve(actuator.router()).await;
    let (status, info) = get_json(&format!("http://{addr}/actuator/info")).await;
    assert_eq!(status, 200);
    assert_eq!(info["app"]["name"], "info-test");
    assert_eq!(info["app"]["version"], "1.2.3");
    assert_eq!(info["build"]["name"], "msa-core");
    assert_eq!(info["git"]["commit"]["id"], "abc123");
    assert_eq!(info["git"]["branch"], "main");
    assert_eq!(info["team"], "checkout");
    assert_eq!(info["limits"]["max"], 5);

    let (status, links) = get_json(&format!("http://{addr}/actuator")).await;
    assert_eq!(status, 200);
    assert_eq!(
        links["_links"]["prometheus"]["href"],
        "/actuator/prometheus"
    );
}

#[tokio::test]
async fn refresh_runs_hooks_and_reports_changed_keys() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let fail = Arc::new(AtomicBool::new(false));
    let failing = fail.clone();
    let actuator = Actuator::new("refresh-test")
        .on_refresh("settings", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(vec!["shop.price".to_owned(), "shop.flag".to_owned()]) }
        })
        .on_refresh("remote", move || {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err("config server unreachable".into())
                } else {
                    Ok(vec!["shop.price".to_owned()])
                }
            }
        });
    let addr = common::serve(actuator.router()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/actuator/refresh");

    let response = client.post(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let keys: Vec<String> = response.json().await.unwrap();
    assert_eq!(keys, ["shop.flag", "shop.price"]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    fail.store(true, Ordering::SeqCst);
    let response = client.post(&url).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["hook"], "remote");
    assert_eq!(body["errors"][0]["error"], "config server unreachable");
    assert_eq!(
        body["changed"],
        serde_json::json!(["shop.flag", "shop.price"])
    );

    // Refresh is POST only.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
}
