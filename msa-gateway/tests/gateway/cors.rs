//! CORS as Spring Cloud Gateway does it: `globalcors` by path pattern and per route in
//! `metadata.cors`; preflights answered by the gateway, origins outside the list refused
//! and never echoed.

use crate::support::{GatewayProcess, client, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_simple_requests() {
    let a = upstream("a").await;
    let yaml = format!(
        "
globalcors:
  cors-configurations:
    '[/api/**]':
      allowedOrigins: https://shop.example
      allowedOriginPatterns: 'https://*.partner.example'
      allowedMethods: [ GET, POST ]
      allowedHeaders: [ content-type, x-requested-with ]
      exposedHeaders: x-total
      allowCredentials: true
      maxAge: 3600
    '[/unrouted/**]':
      allowedOrigins: https://shop.example
routes:
  - id: api
    uri: http://{a}
    predicates: [ 'Path=/api/**' ]
    filters: [ StripPrefix=1 ]
  - id: open
    uri: http://{a}
    predicates: [ 'Path=/open/**' ]
    metadata:
      cors: {{ allowedOrigins: '*', allowedMethods: '*' }}
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    let preflight = |path: &str, origin: &str, method: &str, headers: &str| {
        http.request(reqwest::Method::OPTIONS, gateway.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let allow_origin = |response: &reqwest::Response| {
        response
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    // A preflight is answered by the gateway (the upstream would have echoed a body).
    let response = preflight(
        "/api/orders",
        "https://shop.example",
        "POST",
        "Content-Type",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "Content-Type");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "3600");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    assert_eq!(response.text().await.unwrap(), "");
    let response = preflight("/api/orders", "https://eu.partner.example", "GET", "")
        .await
        .unwrap();
    assert_eq!(allow_origin(&response), ["https://eu.partner.example"]);

    // An origin, method or header outside the configuration: 403, nothing echoed.
    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("https://shop.example.evil.example", "GET", ""),
        ("https://shop.example", "DELETE", ""),
        ("https://shop.example", "GET", "x-admin"),
    ] {
        let response = preflight("/api/orders", origin, method, headers)
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin} {method} {headers}");
        assert!(allow_origin(&response).is_empty());
        assert_eq!(response.text().await.unwrap(), "Invalid CORS request");
    }

    // An allowed actual request: the gateway's CORS headers replace the upstream's (it
    // sends `*` and another origin on /dup).
    let response = http
        .get(gateway.url("/api/dup"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(allow_origin(&response), ["https://shop.example"]);
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "x-total"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    assert!(
        response
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v == "Origin")
    );
    // Refused: the upstream is not called, its headers are not passed on.
    let response = http
        .get(gateway.url("/api/dup"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(allow_origin(&response).is_empty());
    // Not cross-origin (no Origin, or the gateway's own): not judged, passed as it came.
    let response = http.get(gateway.url("/api/dup")).send().await.unwrap();
    assert_eq!(allow_origin(&response).len(), 2);
    let own = gateway.base.clone();
    let response = http
        .get(gateway.url("/api/dup"))
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(allow_origin(&response).len(), 2);

    // A route's own configuration; and a global one for a path no route takes.
    let response = http
        .get(gateway.url("/open/x"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&response), ["*"]);
    let response = preflight("/unrouted/x", "https://shop.example", "GET", "")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(allow_origin(&response), ["https://shop.example"]);
    let response = http.get(gateway.url("/unrouted/x")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[test]
fn a_bad_cors_setting_names_its_key() {
    let yaml = "globalcors:\n  cors-configurations:\n    '[/**]':\n      allowedOrigins: '*'\n      allowCredentials: true\nroutes: []\n";
    let config = msa_gateway::GatewayConfig::parse("gateway.yaml", yaml).unwrap();
    let error = msa_gateway::Gateway::new(&config).unwrap_err();
    assert_eq!(
        (error.key.as_str(), error.line),
        (
            "globalcors.cors-configurations.[/**].allowedOrigins",
            Some(4)
        ),
        "{error}"
    );
}
