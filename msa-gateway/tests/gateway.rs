//! The msa-gateway binary over real HTTP: predicates, filters, the proxy's always-on
//! behaviour, lb:// through the balancer, hot reload and configuration errors.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use support::{GatewayProcess, client, json_of, raw, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicates_filters_and_the_proxy() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let yaml = format!(
        "
routes:
  - id: orders
    uri: http://{a}
    predicates:
      - Path=/api/orders/**
    filters:
      - StripPrefix=1
      - AddRequestHeader=X-Route, orders
      - AddRequestParameter=source, gateway
  - id: by-id
    uri: http://{a}
    order: -1
    predicates:
      - Path=/api/items/{{id}}
      - Method=GET
    filters:
      - SetPath=/catalog/{{id}}
  - id: rewrite
    uri: http://{a}
    predicates: [ 'Path=/red/**' ]
    filters: [ 'RewritePath=/red/?(?<segment>.*), /blue/$\\{{segment}}', 'PrefixPath=/v1' ]
  - id: header
    uri: http://{b}
    predicates: [ 'Path=/h/**', 'Header=X-Tenant, \\d+', 'Query=debug', 'Cookie=session, ok.*', 'RemoteAddr=127.0.0.1/32' ]
  - id: host
    uri: http://{b}
    predicates: [ 'Host=**.shop.test', 'Path=/host/**' ]
  - id: teapot
    uri: http://{a}
    predicates: [ 'Path=/teapot' ]
    filters: [ 'SetStatus=418', 'SecureHeaders' ]
  - id: redirect
    uri: http://{a}
    predicates: [ 'Path=/old/**' ]
    filters: [ 'RedirectTo=302, https://new.example/here' ]
  - id: limits
    uri: http://{a}
    predicates: [ 'Path=/upload' ]
    filters: [ 'RequestSize=16B', 'RequestHeaderSize=200B' ]
  - id: dup
    uri: http://{a}
    predicates: [ 'Path=/dup' ]
    filters: [ 'DedupeResponseHeader=Access-Control-Allow-Origin', 'RemoveResponseHeader=X-Internal' ]
  - id: status
    uri: http://{a}
    predicates: [ 'Path=/status/**' ]
default-filters:
  - AddResponseHeader=X-Gateway, msa
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();

    // Path + StripPrefix + headers + query; the always-on headers.
    let response = http
        .get(gateway.url("/api/orders/7?x=1"))
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway"], "msa");
    assert_eq!(response.headers()["x-echo-path"], "/orders/7");
    let echo = json_of(response).await;
    let headers = &echo["headers"];
    assert_eq!(headers["x-route"], "orders");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(
        headers["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        headers["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http;host=")
    );
    assert!(headers.get("x-hop").is_none(), "{headers}");
    assert_eq!(headers["host"], a.to_string());

    // Dot segments are resolved before matching; climbing above the root is refused.
    // (Sent raw: HTTP clients resolve them before sending.)
    let answer = raw(&gateway, "/api/x/../orders/%2e/7").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-echo-path: /orders/7"), "{answer}");
    let answer = raw(&gateway, "/api/%2e%2e/%2e%2e/etc/passwd").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Order beats file order; SetPath uses the path variable.
    let response = gateway.get("/api/items/42").await;
    assert_eq!(response.headers()["x-echo-path"], "/catalog/42");
    let response = http
        .post(gateway.url("/api/items/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "Method=GET only");
    let response = gateway.get("/red/shoes").await;
    assert_eq!(response.headers()["x-echo-path"], "/v1/blue/shoes");

    // Every predicate of the header route must hold.
    let with = |tenant: &str| {
        http.get(gateway.url("/h/x?debug"))
            .header("x-tenant", tenant)
            .header("cookie", "session=okay")
    };
    assert_eq!(
        json_of(with("42").send().await.unwrap()).await["upstream"],
        "b"
    );
    let response = with("abc").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http
        .get(gateway.url("/h/x"))
        .header("x-tenant", "42")
        .header("cookie", "session=okay")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "Query=debug missing");
    let response = http
        .get(gateway.url("/host/x"))
        .header("host", "eu.shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await["upstream"], "b");
    let response = http
        .get(gateway.url("/host/x"))
        .header("host", "shop.other")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Response filters, short circuits and limits.
    let response = gateway.get("/teapot").await;
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let response = gateway.get("/old/page").await;
    assert_eq!(
        (
            response.status().as_u16(),
            response.headers()["location"].to_str().unwrap()
        ),
        (302, "https://new.example/here")
    );
    let response = http
        .post(gateway.url("/upload"))
        .body("x".repeat(17))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response = http
        .post(gateway.url("/upload"))
        .body("x".repeat(16))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .post(gateway.url("/upload"))
        .header("x-big", "y".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let response = gateway.get("/dup").await;
    let origins: Vec<_> = response
        .headers()
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(origins, ["*"]);
    assert!(response.headers().get("x-internal").is_none());
    let response = gateway.get("/status/503").await;
    assert_eq!(response.status(), 503);
    let response = gateway.get("/nowhere").await;
    assert_eq!(response.status(), 404);
    assert!(
        json_of(response).await["message"]
            .as_str()
            .unwrap()
            .contains("no route matches GET /nowhere")
    );

    // A header too large for every route: 431 before routing.
    let response = http
        .get(gateway.url("/api/orders/1"))
        .header("x-huge", "z".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);

    // The routes as the gateway runs them.
    let routes = json_of(gateway.get("/actuator/gateway/routes").await).await;
    assert_eq!(routes.as_array().unwrap().len(), 10);
    let one = json_of(gateway.get("/actuator/gateway/routes/orders").await).await;
    assert_eq!(one["predicates"][0], "Path=/api/orders/**");
    assert_eq!(
        gateway.get("/actuator/gateway/routes/none").await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_routes_use_the_balancer_and_skip_dead_instances() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "
discovery:
  instances:
    - {{ id: inv-a, service: inventory, host: 127.0.0.1, port: {}, status: UP }}
    - {{ id: inv-b, service: inventory, host: 127.0.0.1, port: {}, status: UP }}
    - {{ id: inv-dead, service: inventory, host: 127.0.0.1, port: {}, status: UP }}
  balancer: {{ strategy: round-robin }}
routes:
  - id: inventory
    uri: lb://inventory
    predicates: [ 'Path=/inventory/**' ]
    filters: [ StripPrefix=1 ]
  - id: nobody
    uri: lb://nobody
    predicates: [ 'Path=/nobody/**' ]
",
        a.port(),
        b.port(),
        dead.port()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..12 {
        let response = gateway.get("/inventory/stock").await;
        assert_eq!(response.status(), 200);
        let who = json_of(response).await["upstream"]
            .as_str()
            .unwrap()
            .to_owned();
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let response = gateway.get("/nobody/x").await;
    assert_eq!(response.status(), 503);
    assert!(
        json_of(response).await["message"]
            .as_str()
            .unwrap()
            .contains("no live instance")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reload_and_a_bad_file_keeps_the_old_ones() {
    let a = upstream("a").await;
    let first =
        format!("routes:\n  - id: one\n    uri: http://{a}\n    predicates: [ 'Path=/one' ]\n");
    let gateway = GatewayProcess::start(&first).await;
    assert_eq!(gateway.get("/one").await.status(), 200);

    // A bad edit: the refresh says why, and /one still works.
    std::fs::write(
        gateway.file.path(),
        format!("{first}  - id: two\n    uri: http://{a}\n    predicates: [ 'Path=two' ]\n"),
    )
    .unwrap();
    let response = gateway.refresh().await;
    assert_eq!(response.status(), 400);
    let error = json_of(response).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(":7: routes.1.predicates.0: path pattern \"two\" must start with /"),
        "{error}"
    );
    assert_eq!(gateway.get("/one").await.status(), 200);

    // A good edit applies through the refresh endpoint (and the file watch).
    std::fs::write(
        gateway.file.path(),
        format!("{first}  - id: two\n    uri: http://{a}\n    predicates: [ 'Path=/two' ]\n"),
    )
    .unwrap();
    let response = gateway.refresh().await;
    assert_eq!(json_of(response).await["routes"], 2);
    assert_eq!(gateway.get("/two").await.status(), 200);
}

#[test]
fn a_bad_file_stops_start_up_with_file_line_and_key() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "routes:\n  - id: a\n    uri: http://127.0.0.1:1\n    filters:\n      - StripPrefix=x\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "msa-gateway: {}:5: routes.0.filters.0: `parts` \"x\" is not a whole number\n",
        file.path().display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn tls_termination_is_refused_with_the_reason_rather_than_ignored() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), "routes: []\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
        .arg("--config")
        .arg(file.path())
        .args([
            "--ssl-certificate",
            "cert.pem",
            "--ssl-certificate-private-key",
            "key.pem",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("msa-gateway: --ssl-certificate: msa-gateway does not terminate TLS"),
        "{stderr}"
    );
}

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

/// A token with these claims, signed with `key` by `alg`.
fn token(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    kid: Option<&str>,
    claims: Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_api_key_authentication() {
    use jsonwebtoken::{Algorithm, EncodingKey};

    let a = upstream("a").await;
    // The JWKS: the RSA key, published by a server of the test's own.
    let rsa_private = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&rsa_private).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = json!({ "keys": [jwk] });
    let jwks_app = Router::new().route("/jwks.json", get(move || async move { axum::Json(jwks) }));
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = jwks_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(jwks_listener, jwks_app).await });

    let secret = "an hs256 secret of at least thirty-two bytes";
    let yaml = format!(
        "
routes:
  - id: hs
    uri: http://{a}
    predicates: [ 'Path=/hs/**' ]
    filters:
      - name: JwtAuth
        args: {{ hs256-secret: '{secret}', issuer: https://issuer.test, audience: shop, leeway: 0 }}
  - id: es
    uri: http://{a}
    predicates: [ 'Path=/es/**' ]
    filters:
      - name: JwtAuth
        args: {{ public-key-file: '{}' }}
  - id: jwks
    uri: http://{a}
    predicates: [ 'Path=/jwks/**' ]
    filters:
      - name: JwtAuth
        args: {{ jwks-uri: 'http://{jwks_addr}/jwks.json' }}
  - id: keyed
    uri: http://{a}
    predicates: [ 'Path=/keyed/**' ]
    filters:
      - name: ApiKey
        args: {{ keys: [ k-123, k-456 ] }}
",
        fixture("ec-public.pem").display()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    let now = jsonwebtoken::get_current_timestamp();
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let claims = |exp: u64, iss: &str, aud: &str| json!({"sub": "alice", "exp": exp, "iss": iss, "aud": aud});
    let call = |path: &'static str, token: Option<String>| {
        let mut request = http.get(gateway.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let challenge = |response: &reqwest::Response| {
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // HS256 with issuer and audience.
    let good = token(
        Algorithm::HS256,
        &hs,
        None,
        claims(now + 60, "https://issuer.test", "shop"),
    );
    assert_eq!(call("/hs/x", Some(good)).await.unwrap().status(), 200);
    let response = call("/hs/x", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(challenge(&response), "Bearer realm=\"msa-gateway\"");
    let cases = [
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now - 10, "https://issuer.test", "shop"),
            ),
            "the token has expired",
        ),
        (
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another secret, also thirty-two bytes"),
                None,
                claims(now + 60, "https://issuer.test", "shop"),
            ),
            "the signature does not verify",
        ),
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now + 60, "https://evil.test", "shop"),
            ),
            "wrong issuer",
        ),
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now + 60, "https://issuer.test", "admin"),
            ),
            "wrong audience",
        ),
        // alg "none": header {"alg":"none"}, no signature.
        (
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.".to_owned(),
            "malformed token",
        ),
        ("not.a.token".to_owned(), "malformed token"),
    ];
    for (bad, why) in cases {
        let response = call("/hs/x", Some(bad)).await.unwrap();
        assert_eq!(response.status(), 401, "{why}");
        let challenge = challenge(&response);
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(why),
            "{challenge}"
        );
    }

    // ES256 from a public key file; an RS256 token does not pass.
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap();
    let es = token(
        Algorithm::ES256,
        &ec,
        None,
        json!({"sub": "bob", "exp": now + 60}),
    );
    assert_eq!(call("/es/x", Some(es)).await.unwrap().status(), 200);
    let rs = token(
        Algorithm::RS256,
        &rsa,
        None,
        json!({"sub": "bob", "exp": now + 60}),
    );
    assert_eq!(call("/es/x", Some(rs.clone())).await.unwrap().status(), 401);

    // RS256 through the JWKS (fetched in the background: allow it a moment).
    let rs = token(
        Algorithm::RS256,
        &rsa,
        Some("k1"),
        json!({"sub": "carol", "exp": now + 60}),
    );
    let mut status = 0;
    for _ in 0..100 {
        status = call("/jwks/x", Some(rs.clone()))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let forged = token(
        Algorithm::HS256,
        &hs,
        Some("k1"),
        json!({"sub": "carol", "exp": now + 60}),
    );
    assert_eq!(call("/jwks/x", Some(forged)).await.unwrap().status(), 401);

    // API keys: accepted ones pass (and stay at the gateway); others get 401.
    let response = http
        .get(gateway.url("/keyed/x"))
        .header("x-api-key", "k-456")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        json_of(response).await["headers"]
            .get("x-api-key")
            .is_none()
    );
    let response = http
        .get(gateway.url("/keyed/x"))
        .header("x-api-key", "k-999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(challenge(&response), "ApiKey header=\"x-api-key\"");
    assert_eq!(gateway.get("/keyed/x").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_with_their_close_codes() {
    use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite;

    // An upstream that echoes text and closes with code 4001 when told "bye".
    let app = Router::new().route(
        "/ws",
        get(|upgrade: WebSocketUpgrade| async move {
            upgrade.on_upgrade(|mut socket| async move {
                while let Some(Ok(message)) = socket.recv().await {
                    match message {
                        Message::Text(text) if text.as_str() == "bye" => {
                            let frame = CloseFrame {
                                code: 4001,
                                reason: "done".into(),
                            };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                            break;
                        }
                        Message::Text(text) => {
                            let _ = socket
                                .send(Message::Text(format!("echo: {text}").into()))
                                .await;
                        }
                        _ => {}
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let yaml = format!(
        "routes:\n  - id: ws\n    uri: http://{ws_addr}\n    predicates: [ 'Path=/live/**' ]\n    filters: [ 'RewritePath=/live/(?<rest>.*), /$\\{{rest}}' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let url = gateway.url("/live/ws").replace("http://", "ws://");
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(tungstenite::Message::text("hello"))
        .await
        .unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "echo: hello");
    socket
        .send(tungstenite::Message::text("bye"))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "done");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_filters_and_predicates() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let yaml = format!(
        "
routes:
  - id: headers
    uri: http://{a}
    predicates: [ 'Path=/hdr/**' ]
    filters:
      - AddRequestHeadersIfNotPresent=X-A:1,X-B:2
      - MapRequestHeader=X-From, X-To
      - SetRequestHeader=X-Set, fixed
      - RemoveRequestHeader=X-Drop
      - RemoveRequestParameter=drop
      - SetResponseHeader=X-Resp, set
      - RewriteResponseHeader=X-Echo-Path, /hdr, /rewritten
  - id: preserve
    uri: http://{a}
    predicates: [ 'Path=/preserve/**' ]
    filters: [ PreserveHostHeader ]
  - id: location
    uri: http://{a}
    predicates: [ 'Path=/redirect' ]
    filters: [ RewriteLocationResponseHeader ]
  - id: after
    uri: http://{a}
    predicates: [ 'Path=/time/**', 'After=2000-01-01T00:00:00Z' ]
    order: 2
  - id: before
    uri: http://{b}
    predicates: [ 'Path=/time/**', 'Before=2000-01-01T00:00:00Z' ]
    order: 1
  - id: between
    uri: http://{b}
    predicates: [ 'Path=/between/**', 'Between=2000-01-01T00:00:00Z, 2999-01-01T00:00:00Z' ]
  - id: xff
    uri: http://{a}
    predicates: [ 'Path=/xff/**', 'XForwardedRemoteAddr=10.0.0.0/8' ]
  - id: blue
    uri: http://{a}
    predicates: [ 'Path=/split/**', 'Weight=split, 5' ]
  - id: green
    uri: http://{b}
    predicates: [ 'Path=/split/**', 'Weight=split, 5' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();

    let response = http
        .get(gateway.url("/hdr/x?keep=1&drop=2"))
        .header("x-b", "mine")
        .header("x-from", "value")
        .header("x-set", "theirs")
        .header("x-drop", "gone")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-resp"], "set");
    assert_eq!(response.headers()["x-echo-path"], "/rewritten/x");
    let echo = json_of(response).await;
    let headers = &echo["headers"];
    assert_eq!(
        (headers["x-a"].as_str(), headers["x-b"].as_str()),
        (Some("1"), Some("mine"))
    );
    assert_eq!(headers["x-to"], "value");
    assert_eq!(headers["x-set"], "fixed");
    assert!(headers.get("x-drop").is_none());

    let response = http
        .get(gateway.url("/preserve/x"))
        .header("host", "shop.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(response).await["headers"]["host"],
        "shop.example:8080"
    );

    let response = http
        .get(gateway.url("/redirect"))
        .header("host", "shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["location"],
        "http://shop.example/next?x=1"
    );

    // After holds and Before does not (though Before's route is tried first).
    assert_eq!(json_of(gateway.get("/time/x").await).await["upstream"], "a");
    assert_eq!(
        json_of(gateway.get("/between/x").await).await["upstream"],
        "b"
    );

    let xff = |address: &'static str| {
        http.get(gateway.url("/xff/x"))
            .header("x-forwarded-for", address)
            .send()
    };
    assert_eq!(xff("10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(xff("192.168.1.1").await.unwrap().status(), 404);

    // A 50/50 split: both sides get traffic (a 2^-59 chance of a false failure).
    let mut sides = std::collections::HashSet::new();
    for _ in 0..60 {
        let side = json_of(gateway.get("/split/x").await).await["upstream"].clone();
        sides.insert(side.as_str().unwrap().to_owned());
    }
    assert_eq!(sides.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_continues_through_a_gateway_span() {
    let a = upstream("a").await;
    let yaml = format!(
        "routes:\n  - id: traced\n    uri: http://{a}\n    predicates: [ 'Path=/traced/**' ]\n"
    );
    let yaml = format!(
        "{yaml}  - id: traced-with-headers\n    uri: http://{a}\n    predicates: [ 'Path=/headers/**' ]\n    filters: [ 'AddRequestHeader=X-Via, gateway' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    // Both ways through the gateway: header lines as they came, and a header map.
    for path in ["/traced/x", "/headers/x"] {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let response = client()
            .get(gateway.url(path))
            .header("traceparent", incoming)
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        let upstream_sees = echo["headers"]["traceparent"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = upstream_sees.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_ne!(
            parts[2], "00f067aa0ba902b7",
            "the gateway's span is the upstream's parent"
        );
        assert_eq!(parts[3], "01", "still sampled");
        // W3C: no `tracestate` at all when there is no state to send.
        assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");

        // A state that came in goes on.
        let response = client()
            .get(gateway.url(path))
            .header("traceparent", incoming)
            .header("tracestate", "vendor=abc")
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        assert_eq!(echo["headers"]["tracestate"], "vendor=abc", "{path}");

        // Without one, the gateway starts a trace.
        let echo = json_of(client().get(gateway.url(path)).send().await.unwrap()).await;
        let started = echo["headers"]["traceparent"].as_str().unwrap();
        assert_eq!(started.len(), 55, "{started}");
        assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let a = upstream("a").await;
    let file = |n: usize| {
        format!(
            "routes:\n  - id: api-{n}\n    uri: http://{a}\n    predicates: [ 'Path=/api/**' ]\n    filters: [ 'AddResponseHeader=X-Version, {n}' ]\n"
        )
    };
    let gateway = GatewayProcess::start(&file(0)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let url = gateway.url("/api/x");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let http = client();
            let (mut ok, mut failed, mut versions) = (0, 0, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        ok += 1;
                        versions
                            .insert(response.headers()["x-version"].to_str().unwrap().to_owned());
                    }
                    other => {
                        eprintln!("a request failed: {:?}", other.map(|r| r.status()));
                        failed += 1
                    }
                }
            }
            (ok, failed, versions)
        }));
    }
    for n in 1..=10 {
        std::fs::write(gateway.file.path(), file(n)).unwrap();
        let response = gateway.refresh().await;
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut versions) = (0, 0, std::collections::BTreeSet::new());
    for task in load {
        let (o, f, v) = task.await.unwrap();
        ok += o;
        failed += f;
        versions.extend(v);
    }
    assert_eq!(failed, 0, "{ok} succeeded");
    assert!(ok > 100, "{ok}");
    assert!(
        versions.len() >= 5,
        "the routes changed under load: {versions:?}"
    );
    assert!(versions.contains("10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_over_h2c_with_its_trailers() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    let yaml = format!(
        "
routes:
  - id: health
    uri: http://{grpc}
    predicates: [ 'Path=/grpc.health.v1.Health/**' ]
    filters: [ 'AddResponseHeader=X-Via, gateway' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let channel = tonic::transport::Endpoint::from_shared(gateway.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let answer = client
        .check(HealthCheckRequest {
            service: "inventory".into(),
        })
        .await
        .unwrap();
    assert_eq!(answer.metadata().get("x-via").unwrap(), "gateway");
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    // A gRPC error travels in the trailers: it must arrive as the same status.
    let error = client
        .check(HealthCheckRequest {
            service: "payments".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
}

/// Two gateways share their buckets through a real redis-server (feature `redis`).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_rate_limits_through_redis() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    // A private CA and a certificate for localhost signed by it.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();

    // An https upstream.
    let provider = msa_core::tls::provider();
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"over tls")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let routes = format!(
        "routes:\n  - id: secure\n    uri: https://localhost:{port}\n    predicates: [ 'Path=/secure/**' ]\n"
    );
    let trusting = GatewayProcess::start(&format!(
        "server:\n  upstream-ca-file: '{}'\n{routes}",
        ca_file.path().display()
    ))
    .await;
    let response = client()
        .get(trusting.url("/secure/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "over tls");
    // Twice: the second request reuses the pooled TLS connection.
    let response = client()
        .get(trusting.url("/secure/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Without the private CA, the upstream's certificate is not trusted.
    let doubting = GatewayProcess::start(&routes).await;
    let response = client()
        .get(doubting.url("/secure/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let message = json_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.to_ascii_lowercase().contains("certificate"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_an_upstream_are_capped_and_requests_queue_for_them() {
    // An upstream that counts the connections it accepts and answers after 100 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gateway = GatewayProcess::start(&format!(
        "server:\n  workers: 1\n  max-connections-per-upstream: 2\n\
         routes:\n  - id: slow\n    uri: http://{addr}\n    predicates: [ Path=/** ]\n"
    ))
    .await;

    // Ten at once: two go out, eight wait for those connections, none fails.
    let requests = (0..10).map(|_| {
        let url = gateway.url("/x");
        tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A bad value stops a reload with its key.
    std::fs::write(
        gateway.file.path(),
        "server:\n  max-connections-per-upstream: 0\nroutes: []\n",
    )
    .unwrap();
    let refused = gateway.refresh().await;
    assert_eq!(refused.status(), 400);
    let reason = refused.text().await.unwrap();
    assert!(
        reason.contains("server.max-connections-per-upstream: must be at least 1"),
        "{reason}"
    );
}

/// Sends `request` as written on a new connection and reads until the gateway closes it.
async fn exchange(gateway: &GatewayProcess, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// An upstream that answers by hand: `/hop` with its own connection headers (and then
/// closes), anything else chunked (with a Content-Length that contradicts the chunks).
async fn hand_written_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&received[..end]).into_owned();
                    received.drain(..end);
                    if head.starts_with("GET /hop ") {
                        let answer = "HTTP/1.1 200 OK\r\nConnection: close, X-Secret-Hop\r\n\
                            X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n\
                            X-Kept: Yes\r\nContent-Length: 2\r\n\r\nok";
                        let _ = socket.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nX-Kept: yes\r\n\r\n\
                        3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Routes that only rewrite the target are forwarded line by line, as the request arrived:
/// what they must still do to its headers and to the answer's.
#[tokio::test]
async fn header_lines_pass_as_they_arrived_without_the_hop_by_hop_ones() {
    let a = upstream("a").await;
    let hand = hand_written_upstream().await;
    let yaml = format!(
        "
routes:
  - id: plain
    uri: http://{a}
    predicates: [ 'Path=/plain/**' ]
    filters: [ 'StripPrefix=1', 'AddRequestParameter=via, gw' ]
  - id: hand
    uri: http://{hand}
    predicates: [ 'Path=/hand/**' ]
    filters: [ 'StripPrefix=1' ]
  - id: filtered
    uri: http://{a}
    predicates: [ 'Path=/filtered/**' ]
    filters: [ 'StripPrefix=1', 'AddRequestHeader=X-Route, filtered' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();

    // The request's own lines pass, with their case; hop-by-hop ones (also those that
    // Connection names) stay; earlier proxies' X-Forwarded-For and Forwarded lines are
    // all kept, the gateway's entry after them.
    let answer = exchange(
        &gateway,
        &format!(
            "POST /plain/echo?x=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close, X-Hop\r\n\
             X-Hop: no\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Mixed-Case: Yes\r\n\
             X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.2\r\n\
             Forwarded: for=203.0.113.9\r\nContent-Length: 5\r\n\r\nhello"
        ),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nx-echo-path: /echo\r\n"), "{head}");
    let echoed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["body"], "hello");
    let headers = &echoed["headers"];
    assert_eq!(headers["x-mixed-case"], "Yes");
    assert_eq!(headers["host"], a.to_string());
    assert_eq!(headers["content-length"], "5");
    assert_eq!(
        headers["x-forwarded-for"],
        "203.0.113.9, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], addr);
    assert_eq!(
        headers["forwarded"],
        format!("for=203.0.113.9, for=127.0.0.1;proto=http;host=\"{addr}\"")
    );
    for hop in ["x-hop", "keep-alive", "te", "connection"] {
        assert!(headers.get(hop).is_none(), "{hop} passed: {headers}");
    }

    // The upstream's answer: its connection headers stay with its connection, which it
    // closes; the client's connection goes on, and a chunked answer is passed on chunked.
    let answer = exchange(
        &gateway,
        &format!(
            "GET /hand/hop HTTP/1.1\r\nHost: {addr}\r\n\r\n\
             GET /hand/chunked HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let (first, rest) = answer.split_once("\r\n\r\n").expect("a first answer");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.contains("\r\nX-Kept: Yes"), "{first}");
    let first_lower = first.to_ascii_lowercase();
    for hop in [
        "connection:",
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(!first_lower.contains(hop), "{hop} passed: {first}");
    }
    let (body, second) = rest.split_at(2);
    assert_eq!(body, "ok");
    let (head, body) = second.split_once("\r\n\r\n").expect("a second answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    // The upstream's Content-Length next to its chunks does not pass.
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(dechunk(body), "abcde");

    // A route whose filters need the header map, in the same table: served from the
    // route it matched, the general way.
    let answer = exchange(
        &gateway,
        &format!("GET /filtered/f HTTP/1.1\r\nHost: {addr}\r\nX-Mixed-Case: Yes\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.contains("\r\nx-echo-path: /f\r\n"), "{head}");
    let echoed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["headers"]["x-route"], "filtered");
    assert_eq!(echoed["headers"]["x-mixed-case"], "Yes");
    assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
}

/// A chunked body's data (however it was cut into chunks), up to its last chunk.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            assert_eq!(rest, "\r\n", "what follows the last chunk");
            return data;
        }
        data.push_str(&rest[..size]);
        body = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_buffered_to_its_file_when_on() {
    use msa_gateway::GatewayConfig;
    // Off unless the file says, as in Spring Cloud Gateway; Spring's key turns it on.
    let plain = GatewayConfig::parse("g.yaml", "routes: []\n").unwrap();
    assert!(!plain.access_log.enabled);
    let spring = "reactor:\n  netty:\n    http:\n      server:\n        accessLogEnabled: true\n\
                  spring:\n  cloud:\n    gateway:\n      routes: []\n";
    assert!(
        GatewayConfig::parse("g.yaml", spring)
            .unwrap()
            .access_log
            .enabled
    );
    let bad =
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      flush-interval: soon\n";
    let error = GatewayConfig::parse("g.yaml", bad).unwrap_err().to_string();
    assert!(
        error.starts_with("g.yaml:5: msa.gateway.access-log.flush-interval:"),
        "{error}"
    );

    let a = upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      path: {}\n      flush-interval: 50ms\n\
         routes:\n  - id: echo\n    uri: http://{a}\n    predicates: [ 'Path=/echo/**' ]\n",
        log.display()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    http.get(gateway.url("/echo/1?x=1"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    // A target a log reader would act on is escaped: one request, one line.
    raw(&gateway, "/echo/\"quoted").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = lines
        .iter()
        .find(|l| l.contains("/echo/1"))
        .expect("the traced request");
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains("] \"GET /echo/1?x=1 HTTP/1.1\" 200 - "),
        "{first}"
    );
    assert!(
        first.ends_with(" echo 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{first}"
    );
    let escaped = lines
        .iter()
        .find(|l| l.contains("quoted"))
        .expect("escaped");
    assert!(
        escaped.contains("\"GET /echo/\\x22quoted HTTP/1.1\""),
        "{escaped}"
    );
}
