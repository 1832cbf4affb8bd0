//! Timeout, bulkhead, rate limiter and fallback, with tokio's clock paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use msa_breaker::BoxError;
use msa_breaker::bulkhead::{BulkheadConfig, BulkheadLayer, error::BulkheadFull};
use msa_breaker::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpen};
use msa_breaker::fallback::FallbackLayer;
use msa_breaker::rate_limit::{RateLimiterConfig, RateLimiterLayer, error::RateLimited};
use msa_breaker::timeout::{TimeoutConfig, TimeoutLayer, error::Elapsed};
use tokio::sync::Notify;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

/// Sets its flag when dropped: proof that a future was cancelled, not abandoned.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_call_and_returns_elapsed() {
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d, f) = (dropped.clone(), finished.clone());
    let svc = TimeoutLayer::new(TimeoutConfig {
        timeout_duration: Duration::from_secs(2),
    })
    .layer(tower::service_fn(move |secs: u64| {
        let (guard, finished) = (DropFlag(d.clone()), f.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            finished.store(true, Ordering::SeqCst);
            drop(guard);
            Ok::<_, BoxError>(secs)
        }
    }));

    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    dropped.store(false, Ordering::SeqCst);
    finished.store(false, Ordering::SeqCst);

    let started = Instant::now();
    let error = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        error.downcast_ref::<Elapsed>().unwrap().timeout(),
        Duration::from_secs(2)
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the call's future was dropped"
    );
    advance(Duration::from_secs(60)).await;
    assert!(!finished.load(Ordering::SeqCst), "and never ran to the end");
}

/// A service whose calls wait for `gate`, counting how many run at once.
fn gated(
    gate: Arc<Notify>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone + Send + 'static
{
    tower::service_fn(move |x: u32| {
        let (gate, running, peak) = (gate.clone(), running.clone(), peak.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            gate.notified().await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(x)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn bulkhead_admits_its_slots_and_rejects_the_rest_at_once() {
    let (gate, running, peak) = (
        Arc::new(Notify::new()),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = BulkheadLayer::new(BulkheadConfig {
        max_concurrent_calls: 2,
        max_wait_duration: Duration::ZERO,
    })
    .layer(gated(gate.clone(), running, peak.clone()));

    let a = tokio::spawn(svc.clone().oneshot(1));
    let b = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let error = svc.clone().oneshot(3).await.unwrap_err();
    assert!(error.is::<BulkheadFull>(), "{error}");
    gate.notify_waiters();
    assert_eq!(a.await.unwrap().unwrap() + b.await.unwrap().unwrap(), 3);
    // Slots come back when calls end.
    let c = tokio::spawn(svc.clone().oneshot(4));
    tokio::task::yield_now().await;
    gate.notify_waiters();
    assert_eq!(c.await.unwrap().unwrap(), 4);
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_callers_wait_up_to_the_max_wait_for_a_slot() {
    let (gate, running, peak) = (
        Arc::new(Notify::new()),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let svc = BulkheadLayer::new(BulkheadConfig {
        max_concurrent_calls: 1,
        max_wait_duration: Duration::from_secs(5),
    })
    .layer(gated(gate.clone(), running, peak.clone()));

    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(2));
    let third = tokio::spawn(svc.clone().oneshot(3));
    tokio::task::yield_now().await;
    // The first call ends after 3 s: the second gets its slot within its wait.
    advance(Duration::from_secs(3)).await;
    gate.notify_waiters();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    tokio::task::yield_now().await;
    // The third has now waited 3 s; 2 s more and it gives up.
    advance(Duration::from_secs(2)).await;
    let error = third.await.unwrap().unwrap_err();
    assert!(error.is::<BulkheadFull>(), "{error}");
    gate.notify_waiters();
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "never more than one at once"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_serves_waiting_callers_in_turn_and_rejects_beyond_the_wait() {
    let svc = RateLimiterLayer::new(RateLimiterConfig {
        limit_for_period: 2,
        limit_refresh_period: Duration::from_secs(1),
        timeout_duration: Duration::from_millis(600),
        ..Default::default()
    })
    .layer(tower::service_fn(|_: ()| async {
        Ok::<_, BoxError>(Instant::now())
    }));

    let start = Instant::now();
    let burst = [
        svc.clone().oneshot(()).await.unwrap(),
        svc.clone().oneshot(()).await.unwrap(),
    ];
    assert!(burst.iter().all(|t| *t == start), "a burst of two at once");
    // The third waits for its turn, 500 ms later.
    let third = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(third - start, Duration::from_millis(500));
    // Now the next turn is 500 ms away... and the one after 1000 ms, beyond the wait.
    let fourth = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    let error = svc.clone().oneshot(()).await.unwrap_err();
    let limited = error.downcast_ref::<RateLimited>().unwrap();
    assert!(
        limited.retry_after() > Duration::from_millis(600),
        "{limited}"
    );
    assert_eq!(
        fourth.await.unwrap().unwrap() - start,
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limits_are_independent() {
    let svc = RateLimiterLayer::keyed(
        RateLimiterConfig {
            limit_for_period: 1,
            limit_refresh_period: Duration::from_secs(1),
            timeout_duration: Duration::ZERO,
            ..Default::default()
        },
        |client: &&'static str| Some(*client),
    )
    .layer(tower::service_fn(|client: &'static str| async move {
        Ok::<_, BoxError>(client)
    }));

    assert_eq!(svc.clone().oneshot("alice").await.unwrap(), "alice");
    assert_eq!(svc.clone().oneshot("bob").await.unwrap(), "bob");
    assert!(
        svc.clone()
            .oneshot("alice")
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
    advance(Duration::from_secs(1)).await;
    assert_eq!(svc.clone().oneshot("alice").await.unwrap(), "alice");
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_for_an_open_breaker_and_passes_other_errors_on() {
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig {
        clock: msa_breaker::ClockSource::Tokio,
        ..Default::default()
    });
    let handle = *breaker.breaker();
    let svc = tower::ServiceBuilder::new()
        .layer(FallbackLayer::new(|error: BoxError| {
            if error.is::<CircuitOpen>() {
                Ok("fallback")
            } else {
                Err(error)
            }
        }))
        .layer(breaker)
        .service_fn(|fail: bool| async move {
            if fail {
                Err::<&str, BoxError>("downstream failed".into())
            } else {
                Ok("live")
            }
        });
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "live");
    let error = svc.clone().oneshot(true).await.unwrap_err();
    assert_eq!(error.to_string(), "downstream failed");
    handle.transition_to_forced_open();
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "fallback");
}

#[cfg(feature = "failsafe")]
#[tokio::test(start_paused = true)]
async fn a_failsafe_state_machine_drives_the_same_layer() {
    use msa_breaker::circuit_breaker::State;

    let machine = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            2,
            failsafe::backoff::constant(Duration::from_secs(30)),
        ))
        .build();
    let svc = CircuitBreakerLayer::from_failsafe("legacy", machine)
        .http()
        .layer(tower::service_fn(|status: u16| async move {
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }));
    // 4xx is ignored by msa's HTTP classification, so failsafe never sees it as failing.
    for _ in 0..5 {
        assert_eq!(svc.clone().oneshot(404).await.unwrap().status(), 404);
    }
    assert_eq!(svc.clone().oneshot(503).await.unwrap().status(), 503);
    assert_eq!(svc.clone().oneshot(503).await.unwrap().status(), 503);
    // Two consecutive failures: failsafe opens, msa rejects with its typed error.
    let error = svc.clone().oneshot(200).await.unwrap_err();
    let open = error.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!((open.name(), open.state()), ("legacy", State::Open));
}

#[tokio::test(start_paused = true)]
async fn the_stack_times_out_each_attempt_opens_the_breaker_and_stops_retrying() {
    use msa_breaker::stack::{Resilience, ResilienceConfig};

    let yaml = r#"
resilience4j:
  circuitbreaker:
    configs:
      default: { sliding-window-size: 2, minimum-number-of-calls: 2, clock: tokio }
  retry:
    configs:
      default: { max-attempts: 3, wait-duration: 10ms, enable-randomized-wait: false }
  timelimiter:
    configs:
      default: { timeout-duration: 1s }
  bulkhead:
    instances:
      stack-payments: { max-concurrent-calls: 5 }
"#;
    let config: ResilienceConfig = config::Config::builder()
        .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
        .build()
        .unwrap()
        .get("resilience4j")
        .unwrap();
    let resilience = Resilience::new(config).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let hanging = tower::service_fn(move |_: ()| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, BoxError>("never")
        }
    });
    let svc = resilience
        .layer("stack-payments")
        .unwrap()
        .layer(hanging.clone());

    let start = Instant::now();
    let error = svc.oneshot(()).await.unwrap_err();
    // Two attempts timed out; the second opened the breaker; the third was rejected and
    // not retried.
    assert!(error.is::<CircuitOpen>(), "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(2020));

    // Another stack for the same name shares the (open) breaker.
    let again = resilience.layer("stack-payments").unwrap().layer(hanging);
    assert!(again.oneshot(()).await.unwrap_err().is::<CircuitOpen>());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let breaker = resilience
        .breakers()
        .unwrap()
        .get("stack-payments")
        .unwrap();
    assert_eq!(breaker.metrics().failed_calls, 2);
}

#[test]
fn stack_config_errors_name_the_module_and_key() {
    use msa_breaker::stack::{Resilience, ResilienceConfig};

    let config: ResilienceConfig = serde_json::from_value(serde_json::json!({
        "bulkhead": { "instances": { "inventory": { "max-concurrent-calls": "many" } } }
    }))
    .unwrap();
    let error = Resilience::new(config).unwrap_err();
    assert_eq!(
        error.path, "bulkhead.instances.inventory.max-concurrent-calls",
        "{error}"
    );
}

/// Compiles only if every layer, and the whole stack, serve any request type over a
/// service with any error type (not just `()` requests or `BoxError`).
#[tokio::test(start_paused = true)]
async fn every_layer_serves_any_request_and_error_type() {
    use msa_breaker::retry::{RetryConfig, RetryLayer};
    use msa_breaker::stack::{Resilience, ResilienceConfig};

    fn check<S: Service<u32, Response = u32>>(_: &S) {}
    let inner = tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
    check(&BulkheadLayer::new(BulkheadConfig::default()).layer(inner));
    check(&TimeoutLayer::new(TimeoutConfig::default()).layer(inner));
    check(&RateLimiterLayer::new(RateLimiterConfig::default()).layer(inner));
    check(&CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(inner));
    check(&RetryLayer::new(RetryConfig::default()).layer(inner));
    let stack = Resilience::new(ResilienceConfig::default()).unwrap();
    let svc = stack.layer("any").unwrap().layer(inner);
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}
