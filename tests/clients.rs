//! `msa::App::client()` as Spring's `@LoadBalanced` clients with Resilience4j: which calls
//! are balanced, the stack `resilience4j.*` names per target (retry to another instance
//! within the budget, breaker, bulkhead, time limiter), its Micrometer metrics, and live
//! settings from the config server — over real sockets to servers on 127.0.0.1.

#![cfg(all(feature = "discovery", feature = "breaker", feature = "config"))]

#[path = "support/promtool.rs"]
mod promtool;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use msa::core::ServiceInstance;
use msa::core::settings::Load;
use msa_discovery::discovery::StaticDiscovery;

/// A backend answering every path with `status` after `delay`, counting its calls.
async fn backend(status: u16, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, hits)
}

fn instance(service: &str, addr: SocketAddr) -> ServiceInstance {
    ServiceInstance::new(service, addr.ip().to_string(), addr.port())
}

/// Settings from `yaml` alone (no files or environment of the machine running the test).
fn app(dir: &Path, yaml: &str) -> msa::App {
    std::fs::write(dir.join("application.yml"), yaml).unwrap();
    msa::App::new("clients-test")
        .load(Load {
            dirs: vec![dir.to_owned()],
            env: Default::default(),
            profiles: Some(vec![]),
        })
        .bind("127.0.0.1:0")
        .handle_signals(false)
}

/// Whether `scrape` has a series of `family` with all of `labels`.
fn has_series(scrape: &str, family: &str, labels: &[&str]) -> bool {
    scrape.lines().any(|line| {
        line.starts_with(&format!("{family}{{")) && labels.iter().all(|label| line.contains(label))
    })
}

fn middleware_error<T: std::error::Error + Send + Sync + 'static>(
    error: &reqwest_middleware::Error,
) -> bool {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<T>().is_some(),
        reqwest_middleware::Error::Reqwest(_) => false,
    }
}

#[tokio::test]
async fn only_lb_urls_and_registered_names_are_balanced_the_rest_goes_out_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let (payments, hits) = backend(200, Duration::ZERO).await;
    let app = app(dir.path(), "server.port: 0\n")
        .discovery(StaticDiscovery::new([instance("payments", payments)]));
    let client = app.client();

    // Spring's scheme and a registered name reach the instance.
    for url in ["lb://payments/charge?x=1", "http://payments/charge"] {
        let answer = client.get(url).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{url}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A host with a dot, and a single name discovery does not know, go out as they are:
    // the resolver's failure, not the balancer's "no instance".
    for url in ["http://api.example.invalid/x", "http://not-a-service/x"] {
        let error = client.get(url).send().await.unwrap_err();
        assert!(
            matches!(&error, reqwest_middleware::Error::Reqwest(e) if e.is_connect()),
            "{url}: {error:?}"
        );
    }
    // An address with a port goes out plainly too.
    let direct = client.get(format!("http://{payments}/x")).send().await;
    assert_eq!(direct.unwrap().status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_go_to_another_instance_and_stop_at_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, bad_hits) = backend(503, Duration::ZERO).await;
    let (good, good_hits) = backend(200, Duration::ZERO).await;
    let (flaky, flaky_hits) = backend(503, Duration::ZERO).await;
    let yaml = "\
resilience4j:
  retry:
    configs:
      default: { max-attempts: 3, wait-duration: 1ms, enable-randomized-wait: false }
    instances:
      flaky:
        max-attempts: 5
        wait-duration: 1ms
        budget: { min-retries-per-second: 0, retry-percent: 10 }
  circuitbreaker:
    configs:
      default: { sliding-window-size: 1000, minimum-number-of-calls: 1000 }
msa.loadbalancer.strategy: round-robin
";
    let app = app(dir.path(), yaml).discovery(StaticDiscovery::new([
        instance("payments", bad),
        instance("payments", good),
        instance("flaky", flaky),
    ]));
    let client = app.client();

    // Every call succeeds: one that met the bad instance was retried on the good one,
    // never on the bad one again.
    for _ in 0..20 {
        let answer = client.get("http://payments/pay").send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(good_hits.load(Ordering::SeqCst), 20);
    let bad = bad_hits.load(Ordering::SeqCst);
    println!("20 calls: 20 answered by the good instance, {bad} attempts at the bad one first");
    assert!(
        (1..=20).contains(&bad),
        "{bad} calls reached the bad instance"
    );

    // A service that always fails: 100 calls of up to 5 attempts each, but retries may
    // add only 10 % to the calls (and no minimum): about 110 attempts, not 500.
    for _ in 0..100 {
        let answer = client.get("http://flaky/pay").send().await.unwrap();
        assert_eq!(answer.status(), 503);
    }
    let attempts = flaky_hits.load(Ordering::SeqCst);
    println!("100 calls of up to 5 attempts to a failing service: {attempts} attempts");
    assert!(
        (100..=112).contains(&attempts),
        "{attempts} attempts for 100 calls"
    );
    let metrics = msa::core::metrics::render();
    for series in [
        [r#"kind="successful_with_retry""#, r#"name="payments""#],
        [r#"kind="failed_with_retry""#, r#"name="flaky""#],
        // Turned down by the budget.
        [r#"kind="failed_without_retry""#, r#"name="flaky""#],
    ] {
        assert!(
            has_series(&metrics, "resilience4j_retry_calls_total", &series),
            "{series:?}"
        );
    }
}

#[tokio::test]
async fn a_bulkhead_and_a_time_limiter_from_config_and_their_micrometer_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (gated, _) = backend(200, Duration::from_millis(500)).await;
    let (sleepy, sleepy_hits) = backend(200, Duration::from_secs(30)).await;
    let yaml = "\
server.port: 0
resilience4j:
  bulkhead:
    instances:
      gated: { max-concurrent-calls: 2, max-wait-duration: 0 }
  timelimiter:
    instances:
      sleepy: { timeout-duration: 100ms }
  retry:
    instances:
      gated: { max-attempts: 1 }
      sleepy: { max-attempts: 1 }
  ratelimiter:
    instances:
      gated: { limit-for-period: 100, limit-refresh-period: 1s, timeout-duration: 0 }
";
    let app = app(dir.path(), yaml).discovery(StaticDiscovery::new([
        instance("gated", gated),
        instance("sleepy", sleepy),
    ]));
    let client = app.client();

    // Two calls at once fit; the third is turned away at once.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("http://gated/work").send().await })
        })
        .collect();
    let mut full = 0;
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(answer) if answer.status() == 200 => ok += 1,
            Err(error)
                if middleware_error::<msa_breaker::bulkhead::error::BulkheadFull>(&error) =>
            {
                full += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, full), (2, 1));

    // A call past the time limit is cancelled.
    let error = client.get("http://sleepy/work").send().await.unwrap_err();
    assert!(
        middleware_error::<msa_breaker::timeout::error::Elapsed>(&error),
        "{error:?}"
    );
    assert_eq!(sleepy_hits.load(Ordering::SeqCst), 1);

    // The service's scrape carries Micrometer's names and labels, and passes promtool
    // (scraped twice, so that the first scrape is in the server's own series).
    let running = app.start().await.unwrap();
    let prometheus = format!("http://{}/actuator/prometheus", running.local_addr());
    reqwest::get(&prometheus).await.unwrap();
    let scrape = reqwest::get(&prometheus)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool::check(&scrape, |_| false);
    for (family, labels) in [
        (
            "http_client_requests_seconds_count",
            &[
                r#"client_name="gated""#,
                r#"exception="none""#,
                r#"method="GET""#,
                r#"outcome="SUCCESS""#,
                r#"status="200""#,
                r#"uri="none""#,
            ][..],
        ),
        (
            "http_client_requests_seconds_count",
            &[
                r#"client_name="gated""#,
                r#"exception="BulkheadFullException""#,
                r#"outcome="UNKNOWN""#,
                r#"status="CLIENT_ERROR""#,
            ],
        ),
        (
            "http_client_requests_seconds_count",
            &[r#"client_name="sleepy""#, r#"exception="TimeoutException""#],
        ),
        (
            "resilience4j_bulkhead_available_concurrent_calls",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_bulkhead_max_allowed_concurrent_calls",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_timelimiter_calls_total",
            &[r#"kind="timeout""#, r#"name="sleepy""#],
        ),
        (
            "resilience4j_circuitbreaker_state",
            &[r#"name="gated""#, r#"state="closed""#],
        ),
        (
            "resilience4j_circuitbreaker_calls_seconds_count",
            &[r#"kind="successful""#, r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_calls_seconds_bucket",
            &[r#"kind="failed""#, r#"name="sleepy""#],
        ),
        (
            "resilience4j_circuitbreaker_failure_rate",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_buffered_calls",
            &[r#"kind="failed""#, r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_max_buffered_calls",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_not_permitted_calls_total",
            &[r#"kind="not_permitted""#, r#"name="gated""#],
        ),
        (
            "resilience4j_retry_calls_total",
            &[r#"kind="successful_without_retry""#, r#"name="gated""#],
        ),
        (
            "resilience4j_ratelimiter_available_permissions",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_ratelimiter_waiting_threads",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_slow_call_rate",
            &[r#"name="gated""#],
        ),
        (
            "resilience4j_circuitbreaker_slow_calls",
            &[r#"kind="successful""#, r#"name="gated""#],
        ),
        (
            "http_server_requests_seconds_bucket",
            &[
                r#"exception="none""#,
                r#"method="GET""#,
                r#"outcome="SUCCESS""#,
                r#"status="200""#,
                r#"uri="/actuator/prometheus""#,
            ],
        ),
    ] {
        let mut labels = labels.to_vec();
        labels.push(r#"application="clients-test""#);
        assert!(
            has_series(&scrape, family, &labels),
            "{family} {labels:?} not in\n{scrape}"
        );
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_breaker_opened_by_config_follows_the_config_server_live() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let breaker = |minimum: u32| {
        format!(
            "resilience4j.circuitbreaker.instances.payments:\n  sliding-window-size: 50\n  minimum-number-of-calls: {minimum}\n"
        )
    };
    std::fs::write(repo.join("clients-test.yml"), breaker(50)).unwrap();
    let server = msa_config::server::ConfigServer::new(
        msa_config::server::DirRepository::open(&repo).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = listener.local_addr().unwrap();
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (payments, hits) = backend(500, Duration::ZERO).await;
    let app = app(
        dir.path(),
        &format!("server.port: 0\nspring.config.import: \"configserver:http://{config}\"\n"),
    )
    .discovery(StaticDiscovery::new([instance("payments", payments)]));
    let client = app.client();
    let running = app.start().await.unwrap();

    // Fifty calls needed before the breaker judges: ten failures leave it closed.
    for _ in 0..10 {
        let answer = client.get("http://payments/pay").send().await.unwrap();
        assert_eq!(answer.status(), 500);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 10);

    // Five, from now on: the next failure opens it, and calls stop reaching payments.
    std::fs::write(repo.join("clients-test.yml"), breaker(5)).unwrap();
    let edited = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.get("http://payments/pay").send().await {
            Ok(answer) => assert_eq!(answer.status(), 500),
            Err(error) if msa_breaker::middleware::is_circuit_open(&error) => break,
            Err(error) => panic!("{error:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new settings never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "the breaker opened under the new settings {:?} after the edit",
        edited.elapsed()
    );
    let reached = hits.load(Ordering::SeqCst);
    let error = client.get("http://payments/pay").send().await.unwrap_err();
    assert!(msa_breaker::middleware::is_circuit_open(&error));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        reached,
        "an open breaker sends nothing"
    );

    // The health endpoint shows the breaker's state.
    let health: serde_json::Value =
        reqwest::get(format!("http://{}/actuator/health", running.local_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        health["components"]["circuitBreakers"]["details"]["payments"]["state"], "OPEN",
        "{health}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn resilience_settings_that_do_not_read_fail_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        dir.path(),
        "server.port: 0\nresilience4j:\n  retry:\n    instances:\n      payments:\n        max-attempts: 0\n",
    );
    let error = app.start().await.unwrap_err().to_string();
    assert!(
        error.contains("application.yml") && error.contains("resilience4j.retry"),
        "{error}"
    );
}
