//! Routes over real HTTP: predicates, filters, the proxy's always-on behaviour and lb:// through the balancer.

use crate::support::{GatewayProcess, client, json_of, raw, upstream};

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
