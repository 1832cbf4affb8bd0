//! `msa::App`'s listeners: the actuator on a management listener of its own, registered
//! as `management.port`, and the limits every msa listener keeps.

#![cfg(feature = "discovery")]

#[path = "support/listeners.rs"]
mod listeners;

use std::time::Duration;

use msa::core::listener::Limits;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};

#[tokio::test]
async fn an_apps_actuator_moves_to_its_management_listener_and_is_registered_there() {
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_addr = registry.local_addr().unwrap();
    let server = RegistryServer::new(Store::new(StoreConfig::default()));
    tokio::spawn(async move { axum::serve(registry, server.router()).await.unwrap() });

    let running = msa::App::new("probe")
        .bind("127.0.0.1:0")
        .management_bind("127.0.0.1:0")
        .limits(Limits {
            header_read_timeout: listeners::HEADER_READ,
            idle_timeout: listeners::IDLE,
            max_connections: listeners::MAX_CONNECTIONS,
        })
        .handle_signals(false)
        .registry(format!("http://{registry_addr}"))
        .start()
        .await
        .unwrap();
    let management = running.management_addr().unwrap();
    listeners::the_listener_contract_holds(running.local_addr(), management).await;

    // The registered instance says where its actuator is, as Spring Cloud's instances do.
    let url = format!("http://{registry_addr}/eureka/apps/PROBE");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metadata = loop {
        let answer = reqwest::Client::new()
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            let app: serde_json::Value = answer.json().await.unwrap();
            break app["application"]["instance"][0]["metadata"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(metadata["management.port"], management.port().to_string());
    running.shutdown().await.unwrap();
}
