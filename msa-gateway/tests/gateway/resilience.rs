//! CircuitBreaker, Retry and RequestRateLimiter over real upstreams.

use crate::support::{GatewayProcess, client, json_of, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_the_circuit_breaker_with_its_fallback() {
    let a = upstream("a").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "
routes:
  - id: retry
    uri: http://{a}
    predicates: [ 'Path=/retry/**' ]
    filters: [ StripPrefix=1, Retry=3 ]
  - id: retry-post
    uri: http://{a}
    predicates: [ 'Path=/post/**' ]
    filters:
      - StripPrefix=1
      - CacheRequestBody
      - name: Retry
        args: {{ retries: 2, methods: [ POST ], backoff: {{ firstBackoff: 5ms, maxBackoff: 20ms }} }}
  - id: guarded
    uri: http://{dead}
    predicates: [ 'Path=/guarded/**' ]
    filters:
      - name: CircuitBreaker
        args: {{ name: dead-service, fallbackUri: 'forward:/fallback/dead' }}
  - id: fallbacks
    uri: http://{a}
    predicates: [ 'Path=/fallback/**' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();

    // GET: two failures, then success within Retry=3; five failures exhaust it (1 + 3).
    let response = gateway.get("/retry/fail-times/get-a/2").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok after 2: ");
    let response = gateway.get("/retry/fail-times/get-b/5").await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.unwrap(), "failure 4");
    // POST is not retried by default; with CacheRequestBody and methods: POST it is,
    // with its body.
    let response = http
        .post(gateway.url("/retry/fail-times/post-a/1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let response = http
        .post(gateway.url("/post/fail-times/post-b/2"))
        .body("order 7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ok after 2: order 7");

    // The upstream is down: every call gets the fallback, and after the breaker's window
    // (100 calls) it opens and the upstream is not even tried.
    let mut reasons = Vec::new();
    for _ in 0..110 {
        let response = gateway.get("/guarded/stock").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-echo-path"], "/fallback/dead");
        let echo = json_of(response).await;
        reasons.push(
            echo["headers"]["x-msa-fallback-reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(reasons[0].contains("503"), "{}", reasons[0]);
    assert!(reasons[109].contains("is OPEN"), "{}", reasons[109]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_answers_429_past_the_burst() {
    let a = upstream("a").await;
    let yaml = format!(
        "
routes:
  - id: limited
    uri: http://{a}
    predicates: [ 'Path=/limited/**' ]
    filters: [ 'RequestRateLimiter=1, 3, 1, route' ]
  - id: per-user
    uri: http://{a}
    predicates: [ 'Path=/user/**' ]
    filters:
      - name: RequestRateLimiter
        args: {{ replenishRate: 1, burstCapacity: 2, keyResolver: 'header:X-User' }}
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = gateway.get("/limited/x").await;
        statuses.push(response.status().as_u16());
        assert_eq!(response.headers()["x-ratelimit-burst-capacity"], "3");
        assert_eq!(response.headers()["x-ratelimit-replenish-rate"], "1");
        if response.status() == 429 {
            assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // Per key: alice's bucket is hers; a request without the key is denied.
    let user = |name: &'static str| {
        http.get(gateway.url("/user/x"))
            .header("x-user", name)
            .send()
    };
    assert_eq!(user("alice").await.unwrap().status(), 200);
    assert_eq!(user("alice").await.unwrap().status(), 200);
    assert_eq!(user("alice").await.unwrap().status(), 429);
    assert_eq!(user("bob").await.unwrap().status(), 200);
    assert_eq!(gateway.get("/user/x").await.status(), 429);
}

/// Two gateways share their buckets through a real redis-server (feature `redis`).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_rate_limits_through_redis() {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts (Debian's redis-server; `cargo xtask test` installs it)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let redis_guard = Kill(&mut redis);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let a = upstream("a").await;
    let yaml = format!(
        "
routes:
  - id: shared
    uri: http://{a}
    predicates: [ 'Path=/shared/**' ]
    filters:
      - name: RequestRateLimiter
        args: {{ replenishRate: 1, burstCapacity: 3, keyResolver: route, redis-url: 'redis://127.0.0.1:{port}' }}
"
    );
    let one = GatewayProcess::start(&yaml).await;
    let two = GatewayProcess::start(&yaml).await;
    let http = client();
    let mut allowed = 0;
    for n in 0..6 {
        let gateway = if n % 2 == 0 { &one } else { &two };
        let response = gateway.get("/shared/x").await;
        assert_eq!(response.headers()["x-ratelimit-burst-capacity"], "3");
        if response.status() == 200 {
            allowed += 1;
        } else {
            assert_eq!(response.status(), 429);
        }
    }
    assert_eq!(allowed, 3, "one bucket for both replicas");

    // Redis goes away: requests pass (the limiter fails open) rather than fail.
    drop(redis_guard);
    let response = http.get(one.url("/shared/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// The breakers and retries take their settings from `resilience4j.*` by name: a breaker
/// with a window of 4 opens after 4 failures (a default one is still closed after 5), and
/// a route whose retry budget is spent does not retry where a funded one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_and_retries_take_their_settings_from_resilience4j() {
    let a = upstream("a").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "
resilience4j:
  circuitbreaker:
    instances:
      tight:
        sliding-window-size: 4
        minimum-number-of-calls: 4
        failure-rate-threshold: 50
        wait-duration-in-open-state: 60s
  retry:
    instances:
      spent:
        budget: {{ retry-percent: 0, min-retries-per-second: 0 }}
routes:
  - id: tight
    uri: http://{dead}
    predicates: [ 'Path=/tight/**' ]
    filters: [ 'CircuitBreaker=tight' ]
  - id: loose
    uri: http://{dead}
    predicates: [ 'Path=/loose/**' ]
    filters: [ 'CircuitBreaker=loose' ]
  - id: spent
    uri: http://{a}
    predicates: [ 'Path=/spent/**' ]
    filters: [ StripPrefix=1, Retry=3 ]
  - id: funded
    uri: http://{a}
    predicates: [ 'Path=/funded/**' ]
    filters: [ StripPrefix=1, Retry=3 ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let message = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 503);
        json_of(response).await["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    for _ in 0..4 {
        let said = message(gateway.get("/tight/x").await).await;
        assert!(said.contains("unreachable"), "{said}");
    }
    let said = message(gateway.get("/tight/x").await).await;
    assert!(said.contains("'tight' is OPEN"), "{said}");
    for _ in 0..5 {
        let said = message(gateway.get("/loose/x").await).await;
        assert!(said.contains("unreachable"), "{said}");
    }

    let response = gateway.get("/spent/fail-times/spent/1").await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.unwrap(), "failure 1");
    let response = gateway.get("/funded/fail-times/funded/1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok after 1: ");
}

/// An upstream's `Retry-After` sets the retry's wait (msa-breaker's retry under the
/// `Retry` filter): asked for 1 s, the retry comes no sooner; asked for longer than the
/// instance's `max-retry-after`, there is no retry and the client gets the 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_s_retry_after_sets_the_wait_before_the_retry() {
    let a = upstream("a").await;
    let yaml = format!(
        "
resilience4j:
  retry:
    instances:
      patient: {{ max-retry-after: 5s }}
      impatient: {{ max-retry-after: 500ms }}
routes:
  - id: patient
    uri: http://{a}
    predicates: [ 'Path=/patient/**' ]
    filters: [ StripPrefix=1, Retry=3 ]
  - id: impatient
    uri: http://{a}
    predicates: [ 'Path=/impatient/**' ]
    filters: [ StripPrefix=1, Retry=3 ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let response = gateway.get("/patient/retry-after/patient/1").await;
    assert_eq!(response.status(), 200);
    let said = response.text().await.unwrap();
    let waited: u64 = said
        .strip_prefix("calls 2, ")
        .and_then(|rest| rest.strip_suffix(" ms after the first"))
        .unwrap_or_else(|| panic!("one retry: {said}"))
        .parse()
        .unwrap();
    assert!(
        waited >= 1000,
        "the retry came {waited} ms after the first call"
    );

    let response = gateway.get("/impatient/retry-after/impatient/1").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    // The upstream saw one call: the next is its second.
    let response = client()
        .get(format!("http://{a}/retry-after/impatient/1"))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().starts_with("calls 2, "));
}
