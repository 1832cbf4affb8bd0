//! Filters written in Rust (the `custom_filter` example's), named in a routes file and
//! served by a gateway built in this process.

use crate::support::{client, json_of, upstream};

#[path = "../../examples/custom_filter.rs"]
#[allow(dead_code)]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_written_in_rust_is_named_in_the_routes_file() {
    let a = upstream("a").await;
    let yaml = format!(
        "
routes:
  - id: orders
    uri: http://{a}
    predicates: [ 'Path=/{{tenant}}/orders/**' ]
    filters: [ 'Tenant=X-Tenant, acme, globex', StripPrefix=1 ]
  - id: plain
    uri: http://{a}
    predicates: [ 'Path=/plain/**' ]
"
    );
    let config = msa_gateway::GatewayConfig::parse("gateway.yaml", &yaml).unwrap();
    let gateway = msa_gateway::Gateway::with_filters(&config, example::filters()).unwrap();
    let admin = gateway.admin_router(msa_core::actuator::Actuator::new("msa-gateway"));
    let server =
        msa_gateway::Server::start(gateway, admin, "127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = client();

    // The tenant goes upstream as a header; the global filter stamps every answer.
    let response = http
        .get(format!("{base}/acme/orders/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "edge-1");
    let echo = json_of(response).await;
    assert_eq!(echo["headers"]["x-tenant"], "acme");
    // A tenant not on the route's list is refused before the upstream is called.
    let response = http
        .get(format!("{base}/initech/orders/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-served-by"], "edge-1");
    assert_eq!(
        response.text().await.unwrap(),
        "tenant \"initech\" is not served here\n"
    );
    // Global filters run on routes that name none of them.
    let response = http.get(format!("{base}/plain/x")).send().await.unwrap();
    assert_eq!(response.headers()["x-served-by"], "edge-1");
    assert!(json_of(response).await["headers"]["x-tenant"].is_null());

    // The factory's refusal is a configuration error with file, line and key; a name
    // neither msa's nor the team's is one too.
    let bad =
        "routes:\n  - id: t\n    uri: http://127.0.0.1:1\n    filters: [ 'Tenant=X-Tenant' ]\n";
    let config = msa_gateway::GatewayConfig::parse("bad.yaml", bad).unwrap();
    let error = msa_gateway::Gateway::with_filters(&config, example::filters()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "bad.yaml:4: routes.0.filters.0: Tenant needs at least one tenant after the header"
    );
    let config =
        msa_gateway::GatewayConfig::parse("bad.yaml", &bad.replace("Tenant=", "Tenants=")).unwrap();
    let error = msa_gateway::Gateway::new(&config).unwrap_err();
    assert!(
        error.message.contains("unknown filter \"Tenants\""),
        "{error}"
    );
    server.stop(std::time::Duration::from_secs(5));
}
