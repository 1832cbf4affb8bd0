//! Routes from discovery (`discovery.locator`): a service registering in msa-registry gets
//! a route `/<service>/**`, which goes when it deregisters.

use std::net::SocketAddr;
use std::time::Duration;

use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use serde_json::json;

use crate::support::{GatewayProcess, client, json_of, upstream};

/// Registers `port` on 127.0.0.1 as an instance of `app` with the registry's Eureka API.
async fn register(registry: SocketAddr, app: &str, id: &str, port: u16) {
    let body = json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": app, "ipAddr": "127.0.0.1",
        "status": "UP", "port": {"$": port, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90}
    }});
    let response = client()
        .post(format!("http://{registry}/eureka/apps/{app}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

/// The status `path` gets, once it is `want` (within 10 s).
async fn until(gateway: &GatewayProcess, path: &str, want: u16) -> reqwest::Response {
    for _ in 0..400 {
        let response = gateway.get(path).await;
        if response.status() == want {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} did not answer {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_service_gets_a_route_that_goes_when_it_deregisters() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = listener.local_addr().unwrap();
    let server = RegistryServer::new(Store::new(StoreConfig::default()));
    tokio::spawn(async move { axum::serve(listener, server.router()).await });
    let orders = upstream("orders").await;

    let yaml = format!(
        "
discovery:
  registry: http://{registry}
  locator:
    enabled: true
    lower-case-service-id: true
routes:
  - id: fixed
    uri: http://{orders}
    predicates: [ 'Path=/fixed/**' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    assert_eq!(gateway.get("/orders/list").await.status(), 404);

    register(registry, "ORDERS", "orders-1", orders.port()).await;
    let response = until(&gateway, "/orders/list?page=2", 200).await;
    let echo = json_of(response).await;
    assert_eq!(echo["upstream"], "orders");
    // Spring's default filter: the service's segment is taken off the path.
    let response = gateway.get("/orders/list").await;
    assert_eq!(response.headers()["x-echo-path"], "/list");
    let routes = json_of(gateway.get("/actuator/gateway/routes").await).await;
    let ids: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fixed", "ReactiveCompositeDiscoveryClient_orders"]);

    let response = client()
        .delete(format!("http://{registry}/eureka/apps/ORDERS/orders-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    until(&gateway, "/orders/list", 404).await;
    assert_eq!(gateway.get("/fixed/x").await.status(), 200);
}

#[test]
fn the_locator_s_templates_are_checked_with_file_line_and_key() {
    let yaml = "discovery:\n  instances: [ { id: o-1, service: orders, host: 127.0.0.1, port: 1 } ]\n  locator:\n    enabled: true\n    predicates: [ \"Path=serviceId\" ]\nroutes: []\n";
    let config = msa_gateway::GatewayConfig::parse("gateway.yaml", yaml).unwrap();
    let error = msa_gateway::Gateway::new(&config).unwrap_err();
    assert_eq!(
        (error.key.as_str(), error.line),
        ("discovery.locator.predicates.0", Some(5)),
        "{error}"
    );
}
