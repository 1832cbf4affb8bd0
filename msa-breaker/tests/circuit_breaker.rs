//! The circuit breaker's behaviour, with tokio's clock paused so that every time-based
//! transition is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use msa_breaker::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpen, Event, InitialState,
    SlidingWindowType, State,
};
use msa_breaker::{BoxError, ClockSource, Outcome};
use tokio::sync::Notify;
use tokio::time::advance;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

/// What the downstream does on a call.
#[derive(Clone, Copy, Debug)]
enum Act {
    Ok,
    Fail,
    /// Succeeds after this long.
    Slow(Duration),
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        sliding_window_size: 4,
        minimum_number_of_calls: 4,
        failure_rate_threshold: 50.0,
        permitted_number_of_calls_in_half_open_state: 2,
        wait_duration_in_open_state: Duration::from_secs(10),
        clock: ClockSource::Tokio,
        ..Default::default()
    }
}

/// A downstream that does what it is told, through a breaker built from `config`.
struct Harness {
    breaker: CircuitBreaker,
    calls: Arc<AtomicUsize>,
}

impl Harness {
    fn new(config: CircuitBreakerConfig) -> Self {
        Self::named("test", config)
    }

    fn named(name: &str, config: CircuitBreakerConfig) -> Self {
        Harness {
            breaker: CircuitBreaker::new(name, config).unwrap(),
            calls: Arc::default(),
        }
    }

    fn service(&self) -> BoxCloneService<Act, &'static str, BoxError> {
        let calls = self.calls.clone();
        let service = CircuitBreakerLayer::from_breaker(self.breaker).layer(tower::service_fn(
            move |act: Act| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match act {
                        Act::Ok => Ok("ok"),
                        Act::Fail => Err::<_, BoxError>("downstream failed".into()),
                        Act::Slow(d) => {
                            tokio::time::sleep(d).await;
                            Ok("slow")
                        }
                    }
                }
            },
        ));
        BoxCloneService::new(service)
    }

    async fn call(&self, act: Act) -> Result<&'static str, BoxError> {
        self.service().oneshot(act).await
    }

    async fn calls(&self, acts: &[Act]) {
        for &act in acts {
            let _ = self.call(act).await;
        }
    }

    fn downstream_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn is_rejection(result: Result<&'static str, BoxError>, state: State) -> bool {
    match result {
        Err(error) => error
            .downcast_ref::<CircuitOpen>()
            .is_some_and(|e| e.state() == state && e.name() == "test"),
        Ok(_) => false,
    }
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_threshold_and_not_before_the_minimum_calls() {
    let h = Harness::new(config());
    h.calls(&[Act::Ok, Act::Fail, Act::Fail]).await;
    // Three calls: 67% failures, but below the minimum of four.
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.metrics().failure_rate, None);
    h.calls(&[Act::Ok]).await;
    // Four calls, 50%: at the threshold opens.
    assert_eq!(h.breaker.state(), State::Open);
    let m = h.breaker.metrics();
    assert_eq!((m.buffered_calls, m.buffered_failed_calls), (4, 2));
    assert_eq!(m.failure_rate, Some(50.0));

    // Open: rejected without calling the downstream.
    let before = h.downstream_calls();
    assert!(is_rejection(h.call(Act::Ok).await, State::Open));
    assert_eq!(h.downstream_calls(), before);
    assert_eq!(h.breaker.metrics().not_permitted_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn below_the_threshold_stays_closed_as_the_window_slides() {
    let h = Harness::new(config());
    // 1 failure in every 4 calls: 25% < 50%, forever.
    for _ in 0..10 {
        h.calls(&[Act::Fail, Act::Ok, Act::Ok, Act::Ok]).await;
    }
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.metrics().failure_rate, Some(25.0));
    assert_eq!(h.breaker.metrics().successful_calls, 30);
    assert_eq!(h.breaker.metrics().failed_calls, 10);
}

#[tokio::test(start_paused = true)]
async fn waits_in_open_then_admits_exactly_the_permitted_probes_and_closes() {
    let h = Harness::new(config());
    h.calls(&[Act::Fail; 4]).await;
    assert_eq!(h.breaker.state(), State::Open);

    advance(Duration::from_millis(9_999)).await;
    assert!(is_rejection(h.call(Act::Ok).await, State::Open));
    advance(Duration::from_millis(1)).await;

    // Two probes in flight: the third caller is turned away.
    let mut probes = Vec::new();
    for _ in 0..2 {
        let mut svc = h.service();
        svc.ready().await.unwrap();
        probes.push(tokio::spawn(svc.call(Act::Slow(Duration::from_millis(5)))));
    }
    tokio::task::yield_now().await;
    assert_eq!(h.breaker.state(), State::HalfOpen);
    assert!(is_rejection(h.call(Act::Ok).await, State::HalfOpen));
    for probe in probes {
        assert_eq!(probe.await.unwrap().unwrap(), "slow");
    }
    // Both probes succeeded: closed, with an empty window.
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.metrics().buffered_calls, 0);
    assert_eq!(h.call(Act::Ok).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn failing_probes_reopen_with_exponential_backoff() {
    let h = Harness::new(CircuitBreakerConfig {
        enable_exponential_backoff: true,
        exponential_backoff_multiplier: 2.0,
        ..config()
    });
    h.calls(&[Act::Fail; 4]).await;
    assert_eq!(h.breaker.state(), State::Open);

    advance(Duration::from_secs(10)).await;
    h.calls(&[Act::Fail, Act::Ok]).await; // 50% of the probes failed
    assert_eq!(h.breaker.state(), State::Open);

    // The second consecutive opening waits 20 s.
    advance(Duration::from_secs(19)).await;
    assert!(is_rejection(h.call(Act::Ok).await, State::Open));
    advance(Duration::from_secs(1)).await;
    h.calls(&[Act::Ok, Act::Ok]).await;
    assert_eq!(h.breaker.state(), State::Closed);

    // Closing forgot the openings: the next opening waits 10 s again.
    h.calls(&[Act::Fail; 4]).await;
    assert_eq!(h.breaker.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    assert_eq!(h.call(Act::Ok).await.unwrap(), "ok");
    assert_eq!(h.breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn automatic_transition_half_opens_without_a_call() {
    let h = Harness::new(CircuitBreakerConfig {
        automatic_transition_from_open_to_half_open_enabled: true,
        ..config()
    });
    let mut events = h.breaker.events();
    h.calls(&[Act::Fail; 4]).await;
    assert_eq!(h.breaker.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    tokio::task::yield_now().await;
    assert_eq!(h.breaker.state(), State::HalfOpen);

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(matches!(seen[0], Event::FailureRateExceeded { rate, .. } if rate == 100.0));
    assert!(matches!(
        seen[1],
        Event::StateTransition {
            from: State::Closed,
            to: State::Open,
            ..
        }
    ));
    assert!(matches!(
        seen[2],
        Event::StateTransition {
            from: State::Open,
            to: State::HalfOpen,
            ..
        }
    ));
    assert_eq!(seen.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_half_open_reopens_when_probes_hang() {
    let h = Harness::new(CircuitBreakerConfig {
        max_wait_duration_in_half_open_state: Duration::from_secs(5),
        ..config()
    });
    h.calls(&[Act::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    let mut svc = h.service();
    svc.ready().await.unwrap();
    let _hung = tokio::spawn(svc.call(Act::Slow(Duration::from_secs(3600))));
    tokio::task::yield_now().await;
    assert_eq!(h.breaker.state(), State::HalfOpen);

    advance(Duration::from_secs(5)).await;
    assert!(is_rejection(h.call(Act::Ok).await, State::Open));
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_returns_its_permit_and_records_nothing() {
    let h = Harness::new(CircuitBreakerConfig {
        permitted_number_of_calls_in_half_open_state: 1,
        ..config()
    });
    h.calls(&[Act::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;

    let mut svc = h.service();
    svc.ready().await.unwrap();
    let probe = svc.call(Act::Slow(Duration::from_secs(1)));
    // The only permit is taken.
    assert!(is_rejection(h.call(Act::Ok).await, State::HalfOpen));
    drop(probe); // cancelled before it finished
    assert_eq!(h.breaker.state(), State::HalfOpen);
    // The permit is back, and the cancelled probe counted for nothing: one success closes.
    assert_eq!(h.call(Act::Ok).await.unwrap(), "ok");
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_in_closed_state_records_nothing() {
    let h = Harness::new(config());
    let mut svc = h.service();
    svc.ready().await.unwrap();
    drop(svc.call(Act::Slow(Duration::from_secs(1))));
    assert_eq!(h.breaker.metrics().buffered_calls, 0);
    assert_eq!(h.breaker.metrics().successful_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_permitted_probes_pass_under_concurrency() {
    let h = Arc::new(Harness::new(CircuitBreakerConfig {
        permitted_number_of_calls_in_half_open_state: 3,
        wait_duration_in_open_state: Duration::ZERO,
        clock: ClockSource::Coarse,
        ..config()
    }));
    h.calls(&[Act::Fail; 4]).await;
    assert_eq!(h.breaker.state(), State::Open);

    let release = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (h, release) = (h.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let permit = h.breaker.try_acquire();
            if let Ok(permit) = permit {
                release.notified().await;
                permit.complete(Outcome::Success);
                true
            } else {
                false
            }
        }));
    }
    // Let every task try; then release the probes one by one.
    while h.breaker.metrics().not_permitted_calls < 47 {
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        release.notify_one();
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap() as usize;
    }
    assert_eq!(admitted, 3);
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let h = Harness::new(CircuitBreakerConfig {
        slow_call_duration_threshold: Duration::from_secs(2),
        slow_call_rate_threshold: 50.0,
        ..config()
    });
    h.calls(&[
        Act::Ok,
        Act::Slow(Duration::from_secs(1)),
        Act::Slow(Duration::from_secs(3)),
    ])
    .await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.calls(&[Act::Slow(Duration::from_secs(5))]).await;
    // 2 of 4 slower than 2 s, with no failure at all.
    assert_eq!(h.breaker.state(), State::Open);
    assert_eq!(h.breaker.metrics().buffered_slow_calls, 2);
    assert_eq!(h.breaker.metrics().failure_rate, Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn time_based_window_forgets_old_failures() {
    let h = Harness::new(CircuitBreakerConfig {
        sliding_window_type: SlidingWindowType::TimeBased,
        sliding_window_size: 10,
        minimum_number_of_calls: 4,
        ..config()
    });
    h.calls(&[Act::Fail, Act::Fail, Act::Fail]).await;
    advance(Duration::from_secs(10)).await;
    // The three failures have left the 10-second window: 1 failure of 4 now.
    h.calls(&[Act::Fail, Act::Ok, Act::Ok, Act::Ok]).await;
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.metrics().buffered_calls, 4);
    // Within the window they count.
    advance(Duration::from_secs(5)).await;
    h.calls(&[Act::Fail, Act::Fail, Act::Fail]).await;
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn disabled_metrics_only_and_forced_open() {
    let h = Harness::new(CircuitBreakerConfig {
        initial_state: InitialState::MetricsOnly,
        ..config()
    });
    h.calls(&[Act::Fail; 8]).await;
    assert_eq!(
        h.breaker.state(),
        State::MetricsOnly,
        "records but never opens"
    );
    assert_eq!(h.breaker.metrics().failure_rate, Some(100.0));

    h.breaker.transition_to_disabled();
    h.calls(&[Act::Fail; 8]).await;
    assert_eq!(h.breaker.state(), State::Disabled);
    assert_eq!(h.downstream_calls(), 16);

    h.breaker.transition_to_forced_open();
    assert!(is_rejection(h.call(Act::Ok).await, State::ForcedOpen));
    advance(Duration::from_secs(3600)).await;
    assert!(
        is_rejection(h.call(Act::Ok).await, State::ForcedOpen),
        "no wait ends it"
    );
    assert_eq!(h.downstream_calls(), 16);

    h.breaker.reset();
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.call(Act::Ok).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn new_thresholds_apply_to_a_live_breaker_without_losing_its_window() {
    let h = Harness::new(config());
    h.calls(&[Act::Fail, Act::Ok, Act::Ok, Act::Ok]).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.breaker
        .update_config(CircuitBreakerConfig {
            failure_rate_threshold: 25.0,
            ..config()
        })
        .unwrap();
    assert_eq!(h.breaker.metrics().buffered_calls, 4, "the window is kept");
    // One more call slides the window to [Ok, Ok, Ok, Fail]: 25% now opens.
    h.calls(&[Act::Fail]).await;
    assert_eq!(h.breaker.state(), State::Open);

    // A bad config is refused and the old one stays.
    let error = h
        .breaker
        .update_config(CircuitBreakerConfig {
            failure_rate_threshold: 150.0,
            ..config()
        })
        .unwrap_err();
    assert_eq!(error.key, "failure-rate-threshold");
    assert_eq!(h.breaker.config().failure_rate_threshold, 25.0);
}

#[tokio::test(start_paused = true)]
async fn http_responses_are_classified_by_status() {
    let breaker = CircuitBreaker::new("http", config()).unwrap();
    let status = Arc::new(AtomicUsize::new(200));
    let s = status.clone();
    let svc =
        CircuitBreakerLayer::from_breaker(breaker)
            .http()
            .layer(tower::service_fn(move |_: ()| {
                let code = s.load(Ordering::SeqCst) as u16;
                async move {
                    Ok::<_, BoxError>(http::Response::builder().status(code).body(()).unwrap())
                }
            }));
    for code in [404, 404, 404, 404, 200, 503] {
        status.store(code, Ordering::SeqCst);
        svc.clone().oneshot(()).await.unwrap();
    }
    let m = breaker.metrics();
    assert_eq!(m.ignored_calls, 4, "4xx is the caller's fault");
    assert_eq!((m.buffered_calls, m.buffered_failed_calls), (2, 1));
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn metrics_are_exposed_under_resilience4j_names() {
    // Breakers of one name share their series: this one has its own name.
    let h = Harness::named("metrics-test", config());
    h.calls(&[Act::Fail; 4]).await;
    let _ = h.call(Act::Ok).await;
    let text = msa_core::metrics::render();
    assert!(
        text.contains(r#"resilience4j_circuitbreaker_state{name="metrics-test",state="open"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"resilience4j_circuitbreaker_state{name="metrics-test",state="closed"} 0"#)
    );
    assert!(text.contains(
        r#"resilience4j_circuitbreaker_calls_seconds_count{kind="failed",name="metrics-test"} 4"#
    ));
    assert!(text.contains(
        r#"resilience4j_circuitbreaker_not_permitted_calls_total{kind="not_permitted",name="metrics-test"} 1"#
    ));
    assert!(text.contains(r#"resilience4j_circuitbreaker_failure_rate{name="metrics-test"} 100"#));
}

#[tokio::test(start_paused = true)]
async fn a_registry_from_yaml_shares_one_breaker_per_name_and_updates_it_live() {
    use msa_breaker::Section;
    use msa_breaker::circuit_breaker::CircuitBreakerRegistry;

    let load = |yaml: &str| -> Section {
        config::Config::builder()
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .unwrap()
            .get("resilience4j.circuitbreaker")
            .unwrap()
    };
    let registry = CircuitBreakerRegistry::new(load(
        r#"
resilience4j:
  circuitbreaker:
    configs:
      default:
        sliding-window-size: 4
        minimum-number-of-calls: 4
        wait-duration-in-open-state: 10s
        clock: tokio
    instances:
      registry-payments:
        failure-rate-threshold: 75
"#,
    ))
    .unwrap();
    let a = registry.get("registry-payments").unwrap();
    let b = registry.get("registry-payments").unwrap();
    let h = Harness {
        breaker: a,
        calls: Arc::default(),
    };
    h.calls(&[Act::Fail, Act::Fail, Act::Ok, Act::Ok]).await;
    // 50% < 75%: closed, and the second handle sees the same window.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().buffered_calls, 4);

    // A bad update changes nothing and names the key.
    let error = registry
        .update(load(
            r#"
resilience4j:
  circuitbreaker:
    instances:
      registry-payments:
        failure-rate-threshold: 0
"#,
        ))
        .unwrap_err();
    assert_eq!(
        error.path,
        "instances.registry-payments.failure-rate-threshold"
    );
    assert_eq!(b.config().failure_rate_threshold, 75.0);

    registry
        .update(load(
            r#"
resilience4j:
  circuitbreaker:
    configs:
      default:
        sliding-window-size: 4
        minimum-number-of-calls: 4
    instances:
      registry-payments:
        failure-rate-threshold: 50
"#,
        ))
        .unwrap();
    // The live window kept its calls; the next failure decides at the new threshold.
    assert_eq!(b.metrics().buffered_calls, 4);
    h.calls(&[Act::Fail]).await;
    assert_eq!(b.state(), State::Open);
}
