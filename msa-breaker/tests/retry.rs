//! Retry, with tokio's clock paused so every wait is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use msa_breaker::BoxError;
use msa_breaker::retry::{RetryBudgetConfig, RetryConfig, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn fixed(max_attempts: u32, wait_ms: u64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        wait_duration: Duration::from_millis(wait_ms),
        enable_randomized_wait: false,
        ..Default::default()
    }
}

/// A service failing its first `failures` calls; returns the call count.
fn flaky(
    failures: u32,
    calls: Arc<AtomicU32>,
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
    tower::service_fn(move |_: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < failures {
                Err::<u32, BoxError>(format!("failure {n}").into())
            } else {
                Ok(n + 1)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_max_attempts_after_the_wait() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 500)).layer(flaky(2, calls.clone()));
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(1000));

    // Three failures in a row: the third attempt's error comes back.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 500)).layer(flaky(10, calls.clone()));
    let error = svc.oneshot(0).await.unwrap_err();
    assert_eq!(error.to_string(), "failure 2");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_grows_and_is_capped() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(RetryConfig {
        enable_exponential_backoff: true,
        exponential_backoff_multiplier: 2.0,
        exponential_max_wait_duration: Duration::from_millis(300),
        ..fixed(5, 100)
    })
    .layer(flaky(4, calls.clone()));
    let start = Instant::now();
    svc.oneshot(0).await.unwrap();
    // 100 + 200 + 300 (capped from 400) + 300 (capped from 800).
    assert_eq!(start.elapsed(), Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn randomized_waits_stay_within_the_factor() {
    for _ in 0..20 {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(RetryConfig {
            enable_randomized_wait: true,
            randomized_wait_factor: 0.5,
            ..fixed(2, 1000)
        })
        .layer(flaky(1, calls));
        let start = Instant::now();
        svc.oneshot(0).await.unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited <= Duration::from_millis(1500),
            "{waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_from_multiplying_an_outage() {
    // No percentage, one retry per second in reserve over a one-second window.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(RetryConfig {
        budget: RetryBudgetConfig {
            ttl: Duration::from_secs(1),
            min_retries_per_second: 1,
            retry_percent: 0.0,
        },
        ..fixed(5, 10)
    })
    .layer(flaky(u32::MAX, calls.clone()));
    for _ in 0..10 {
        assert!(svc.clone().oneshot(0).await.is_err());
    }
    // Ten requests during a total outage: one retry in all, not forty.
    assert_eq!(calls.load(Ordering::SeqCst), 11);

    // With 50% of calls as budget, retries stay within half the traffic.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(RetryConfig {
        budget: RetryBudgetConfig {
            ttl: Duration::from_secs(10),
            min_retries_per_second: 0,
            retry_percent: 50.0,
        },
        ..fixed(5, 10)
    })
    .layer(flaky(u32::MAX, calls.clone()));
    for _ in 0..100 {
        let _ = svc.clone().oneshot(0).await;
    }
    let retries = calls.load(Ordering::SeqCst) - 100;
    assert!(retries <= 50, "{retries} retries for 100 requests");
    assert!(retries >= 40, "the budget is used, not starved: {retries}");
}

type HttpRequest = http::Request<String>;

/// An HTTP downstream answering with the given statuses in turn (then 200).
fn http_downstream(
    statuses: &'static [(u16, Option<&'static str>)],
    calls: Arc<AtomicU32>,
) -> impl tower::Service<
    HttpRequest,
    Response = http::Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: HttpRequest| {
        let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
        async move {
            let (status, retry_after) = statuses.get(n).copied().unwrap_or((200, None));
            let mut response = http::Response::builder().status(status);
            if let Some(value) = retry_after {
                response = response.header("retry-after", value);
            }
            Ok::<_, BoxError>(response.body(()).unwrap())
        }
    })
}

fn request(method: &str) -> HttpRequest {
    http::Request::builder()
        .method(method)
        .uri("/orders")
        .body(String::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_retries_5xx_and_429_on_idempotent_methods_only() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 100))
        .http()
        .layer(http_downstream(&[(503, None), (429, None)], calls.clone()));
    assert_eq!(
        svc.clone().oneshot(request("GET")).await.unwrap().status(),
        200
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 100))
        .http()
        .layer(http_downstream(&[(503, None)], calls.clone()));
    assert_eq!(
        svc.oneshot(request("POST")).await.unwrap().status(),
        503,
        "POST is not retried"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 100))
        .http()
        .layer(http_downstream(&[(404, None)], calls.clone()));
    assert_eq!(
        svc.oneshot(request("GET")).await.unwrap().status(),
        404,
        "4xx is final"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(RetryConfig {
        retry_non_idempotent: true,
        ..fixed(3, 100)
    })
    .http()
    .layer(http_downstream(&[(503, None)], calls.clone()));
    assert_eq!(svc.oneshot(request("POST")).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_too_long_means_no_retry() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 100))
        .http()
        .layer(http_downstream(&[(503, Some("2"))], calls.clone()));
    let start = Instant::now();
    assert_eq!(svc.oneshot(request("GET")).await.unwrap().status(), 200);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "waited as asked, not 100 ms"
    );

    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(fixed(3, 100))
        .http()
        .layer(http_downstream(&[(429, Some("120"))], calls.clone()));
    assert_eq!(svc.oneshot(request("GET")).await.unwrap().status(), 429);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_settings_are_refused_with_their_key() {
    let error = RetryLayer::try_new(RetryConfig {
        budget: RetryBudgetConfig {
            ttl: Duration::from_secs(120),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(error.key, "budget.ttl");
    let config: RetryConfig = serde_json::from_value(serde_json::json!({
        "max-attempts": 4, "wait-duration": "250ms", "budget": { "retry-percent": 10 }
    }))
    .unwrap();
    assert_eq!(
        (config.max_attempts, config.wait_duration),
        (4, Duration::from_millis(250))
    );
    assert_eq!(config.budget.retry_percent, 10.0);
}
