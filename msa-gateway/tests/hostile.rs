//! msa-gateway against hostile clients: paths that try to leave their route's template,
//! hop-by-hop fields that try to remove what a filter adds, and Host values that try to
//! add parameters to `Forwarded`. Each request is one an unauthenticated client can send.

mod support;

use support::{GatewayProcess, client, json_of, raw, upstream};

fn routes(a: std::net::SocketAddr) -> String {
    format!(
        "
routes:
  - id: items
    uri: http://{a}
    predicates:
      - Path=/items/{{id}}
    filters:
      - SetPath=/catalog/items/{{id}}
  - id: files
    uri: http://{a}
    predicates:
      - Path=/files/{{*rest}}
    filters:
      - SetPath=/store{{rest}}
  - id: docs
    uri: http://{a}
    predicates:
      - Path=/docs/{{name}}.txt
    filters:
      - SetPath=/d/{{name}}
  - id: headers
    uri: http://{a}
    predicates:
      - Path=/headers/**
    filters:
      - AddRequestHeader=X-Route, headers
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_dots_and_backslashes_never_reach_a_template() {
    let a = upstream("a").await;
    let gateway = GatewayProcess::start(&routes(a)).await;
    for path in [
        "/items/..%2F..%2Fadmin",
        "/items/..%2f..%2fadmin",
        "/items/a%5C..%5Cadmin",
        "/items/a%00b",
        "/items/a\\..\\admin",
        "/files/a/..%2F..%2Fadmin",
    ] {
        // Sent as written: a client library would normalise some of these.
        let head = raw(&gateway, path).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
    }
    // Encoded dots that make a whole segment are a dot segment, resolved before matching:
    // `/items/..` is `/`, which no route serves.
    for path in ["/items/%2E%2E", "/items/%2e%2e", "/items/x/%2e%2e"] {
        let head = raw(&gateway, path).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }
    // Inside a segment they are captured, and refused where the capture would be a
    // path's dot segment.
    let head = raw(&gateway, "/docs/%2e%2e.txt").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let head = raw(&gateway, "/docs/readme.txt").await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("x-echo-path: /d/readme"),
        "{head}"
    );

    let body = client()
        .get(gateway.url("/items/..%2F..%2Fadmin"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 400);
    assert!(
        body.text()
            .await
            .unwrap()
            .contains("an encoded slash (%2F)"),
        "the answer says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_stays_inside_its_segment_when_written_into_a_path() {
    let a = upstream("a").await;
    let gateway = GatewayProcess::start(&routes(a)).await;
    // `%3F` decoded into the capture must not start a query upstream, nor `%23` a
    // fragment; `%25` must not be decoded twice.
    let response = gateway.get("/items/a%3Fadmin=1").await;
    assert_eq!(
        response.headers()["x-echo-path"],
        "/catalog/items/a%3Fadmin=1"
    );
    let response = gateway.get("/items/100%25").await;
    assert_eq!(response.headers()["x-echo-path"], "/catalog/items/100%25");
    let response = gateway.get("/items/a%20b").await;
    assert_eq!(response.headers()["x-echo-path"], "/catalog/items/a%20b");
    // A multi-segment capture keeps its slashes, and its encodings.
    let response = gateway.get("/files/x/y%3Fz").await;
    assert_eq!(response.headers()["x-echo-path"], "/store/x/y%3Fz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_connection_header_cannot_remove_what_a_filter_adds() {
    let a = upstream("a").await;
    let gateway = GatewayProcess::start(&routes(a)).await;
    let response = client()
        .get(gateway.url("/headers/x"))
        .header("connection", "x-route, x-extra")
        .header("x-extra", "hop")
        .send()
        .await
        .unwrap();
    let echo = json_of(response).await;
    assert_eq!(echo["headers"]["x-route"], "headers", "{echo}");
    assert_eq!(echo["headers"].get("x-extra"), None, "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_quotes_adds_no_forwarded_parameters() {
    let a = upstream("a").await;
    let gateway = GatewayProcess::start(&routes(a)).await;
    // Both ways through the gateway: as the lines came (items), and as a header map
    // (headers, which has a filter that needs one).
    for path in ["/items/1", "/headers/x"] {
        let response = client()
            .get(gateway.url(path))
            .header("host", r#"shop.example";for=10.0.0.1;by="x"#)
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        let forwarded = echo["headers"]["forwarded"].as_str().unwrap();
        assert!(
            forwarded.ends_with(r#";host="shop.example\";for=10.0.0.1;by=\"x""#),
            "{path}: {forwarded}"
        );
    }
}

/// 30,000 clients, each with its own 2 KB rate-limit key: the gateway's memory stays flat
/// (buckets are kept by a hash of the key, and their number is bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_rate_limit_keys_leave_memory_flat() {
    let a = upstream("a").await;
    let yaml = format!(
        "routes:\n  - id: limited\n    uri: http://{a}\n    predicates: [ 'Path=/limited/**' ]\n    filters: [ 'RequestRateLimiter=10, 20, 1, header:X-Key' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    // Warm up the connections and the allocator first.
    for n in 0..200 {
        let key = format!("warm-{n:0>2043}");
        let answer = http
            .get(gateway.url("/limited/x"))
            .header("x-key", key)
            .send();
        assert_eq!(answer.await.unwrap().status(), 200);
    }
    let before = gateway.rss();
    let mut senders = Vec::new();
    for task in 0..8 {
        let http = http.clone();
        let url = gateway.url("/limited/x");
        senders.push(tokio::spawn(async move {
            for n in (task..30_000).step_by(8) {
                let key = format!("{n:0>2048}");
                let answer = http.get(&url).header("x-key", key).send().await.unwrap();
                assert_eq!(answer.status(), 200);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let after = gateway.rss();
    let growth = after.saturating_sub(before);
    println!(
        "30,000 distinct 2 KB keys: RSS {:.1} MB -> {:.1} MB (+{:.1} MB)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        growth as f64 / 1e6
    );
    assert!(growth < 48_000_000, "grew {growth} bytes");
}

/// The route listing reveals filter settings and refresh changes the routes: on a public
/// listener they need the management token, and the listing never shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_listings_and_refresh_are_guarded_and_secrets_masked() {
    let a = upstream("a").await;
    let yaml = format!(
        "
routes:
  - id: partners
    uri: http://user:hunter2@{a}
    predicates: [ 'Path=/partners/**' ]
    filters:
      - ApiKey=k-partner-a-3f9c, k-partner-b-77d1
      - name: JwtAuth
        args: {{ hs256-secret: 0123456789abcdef0123456789abcdef }}
"
    );
    // Bound to every address, no token: 403 with the reason, even from this host.
    let exposed = GatewayProcess::start_with(&yaml, "0.0.0.0", &[]).await;
    for (method, path) in [
        ("GET", "/actuator/gateway/routes"),
        ("GET", "/actuator/gateway/routes/partners"),
        ("POST", "/actuator/gateway/refresh"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = client()
            .request(method, exposed.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path}");
        assert!(answer.text().await.unwrap().contains("management token"));
    }
    assert_eq!(exposed.get("/actuator/health").await.status(), 200);

    // With a token: 401 without it, the listing with it, and no secret in it.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let guarded = GatewayProcess::start_with(
        &yaml,
        "0.0.0.0",
        &["--management-token-file", token_file.to_str().unwrap()],
    )
    .await;
    let routes = guarded.url("/actuator/gateway/routes");
    assert_eq!(client().get(&routes).send().await.unwrap().status(), 401);
    let wrong = client()
        .get(&routes)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let listing = client()
        .get(&routes)
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    let text = listing.text().await.unwrap();
    for secret in [
        "hunter2",
        "k-partner-a-3f9c",
        "k-partner-b-77d1",
        "0123456789abcdef",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("******"), "{text}");
    let refresh = client()
        .post(guarded.url("/actuator/gateway/refresh"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 200);
}

use support::listeners;

/// A gateway with one worker (so the connection cap is all its own), the probes' limits
/// and a management listener; the gateway and its management address.
async fn gateway_with_limits(more: &[&str]) -> (GatewayProcess, std::net::SocketAddr) {
    let management = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let management_bind = management.to_string();
    let mut args = vec!["--management-bind", &management_bind];
    args.extend(listeners::FLAGS);
    args.extend(more);
    let yaml = "server:\n  workers: 1\nroutes: []\n";
    let gateway = GatewayProcess::start_with(yaml, "127.0.0.1", &args).await;
    (gateway, management)
}

#[tokio::test]
async fn every_listener_bounds_slow_idle_and_surplus_connections() {
    let (gateway, management) = gateway_with_limits(&[]).await;
    listeners::the_listener_contract_holds(gateway.addr(), management).await;
    // The routes listing is a management endpoint: only on its listener.
    assert_eq!(gateway.get("/actuator/gateway/routes").await.status(), 404);
    assert_eq!(
        listeners::status(management, "/actuator/gateway/routes").await,
        200
    );
}

#[tokio::test]
async fn readiness_goes_down_on_sigterm_before_the_gateway_drains() {
    let (gateway, _) = gateway_with_limits(&["--shutdown-grace", "3s"]).await;
    listeners::readiness_goes_down_on_sigterm(gateway.pid(), gateway.addr()).await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_gateway_pauses_instead_of_spinning() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), "server:\n  workers: 1\nroutes: []\n").unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = listeners::with_few_descriptors(env!("CARGO_BIN_EXE_msa-gateway"))
        .arg("--config")
        .arg(file.path())
        .args(["--bind", &addr.to_string()])
        .spawn()
        .unwrap();
    listeners::out_of_descriptors_it_pauses(child.id(), addr).await;
    let _ = child.kill();
    let _ = child.wait();
}
