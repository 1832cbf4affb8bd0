//! The msa-gateway binary's `/actuator/prometheus`: every answer it gives is in
//! `http_server_requests_seconds`, proxied ones also in Spring Cloud Gateway's
//! `spring_cloud_gateway_requests_seconds`, and the scrape passes `promtool check metrics`.

#[path = "../../tests/support/promtool.rs"]
mod promtool;
mod support;

use std::time::{Duration, Instant};

use support::{GatewayProcess, client, upstream};

/// The count of the first series of `family` whose labels include every one of `labels`.
fn count(scrape: &str, family: &str, labels: &[&str]) -> Option<f64> {
    let prefix = format!("{family}_count{{");
    scrape
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_counted_with_springs_names() {
    let a = upstream("a").await;
    let yaml = format!(
        "routes:\n  - id: orders\n    uri: http://{a}\n    predicates: [ 'Path=/api/orders/**' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    let proxied = http.post(gateway.url("/api/orders/1")).body("{}").send();
    assert_eq!(proxied.await.unwrap().status(), 200);
    let unrouted = http.get(gateway.url("/nowhere")).send();
    assert_eq!(unrouted.await.unwrap().status(), 404);
    let health = http.get(gateway.url("/actuator/health")).send();
    assert_eq!(health.await.unwrap().status(), 200);

    let route_uri = format!(r#"routeUri="http://{a}""#);
    // (family, labels, at least this count): the proxied request and the 404 once each,
    // health at least twice (the start-up polls it).
    let wanted: [(&str, Vec<&str>, f64); 4] = [
        (
            "spring_cloud_gateway_requests_seconds",
            vec![
                r#"routeId="orders""#,
                &route_uri,
                r#"outcome="SUCCESSFUL""#,
                r#"status="OK""#,
                r#"httpStatusCode="200""#,
                r#"httpMethod="POST""#,
            ],
            1.0,
        ),
        (
            "http_server_requests_seconds",
            vec![
                r#"method="POST""#,
                r#"uri="orders""#,
                r#"outcome="SUCCESS""#,
                r#"status="200""#,
            ],
            1.0,
        ),
        (
            "http_server_requests_seconds",
            vec![
                r#"method="GET""#,
                r#"uri="NOT_FOUND""#,
                r#"outcome="CLIENT_ERROR""#,
                r#"status="404""#,
            ],
            1.0,
        ),
        (
            "http_server_requests_seconds",
            vec![
                r#"method="GET""#,
                r#"uri="/actuator/health""#,
                r#"status="200""#,
            ],
            2.0,
        ),
    ];
    // Workers flush their counts to the scrape within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let scrape = http.get(gateway.url("/actuator/prometheus")).send();
        let scrape = scrape.await.unwrap().text().await.unwrap();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(family, labels, least)| {
                count(&scrape, family, labels).is_none_or(|n| n < *least)
            })
            .collect();
        if missing.is_empty() {
            break scrape;
        }
        assert!(Instant::now() < deadline, "{missing:?} not in\n{scrape}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (family, labels, _) in &wanted[..3] {
        assert_eq!(count(&scrape, family, labels), Some(1.0), "{labels:?}");
    }
    // Nothing else was proxied; the old name is gone.
    let proxied = scrape
        .lines()
        .filter(|l| l.starts_with("spring_cloud_gateway_requests_seconds_count"))
        .count();
    assert_eq!(proxied, 1, "{scrape}");
    assert!(!scrape.contains("\ngateway_requests_seconds"), "{scrape}");

    // A method no client should be able to turn into a new label value.
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    let brewed = http.request(odd, gateway.url("/api/orders/2")).send();
    assert_eq!(brewed.await.unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let scrape = http.get(gateway.url("/actuator/prometheus")).send();
        let scrape = scrape.await.unwrap().text().await.unwrap();
        let other = [r#"httpMethod="OTHER""#, r#"routeId="orders""#];
        if count(&scrape, "spring_cloud_gateway_requests_seconds", &other) == Some(1.0) {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no OTHER method in\n{scrape}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!scrape.contains("BREW"), "{scrape}");

    // The one finding allowed is Spring's own camelCase label names (`routeId`), which
    // dashboards built for Spring Cloud Gateway query as they are.
    promtool::check(&scrape, |finding| {
        finding.starts_with("spring_cloud_gateway_requests_seconds label names")
            && finding.contains("camelCase")
    });
}
