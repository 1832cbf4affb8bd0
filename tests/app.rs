//! `msa::App`'s listeners: the actuator on a management listener of its own, registered
//! as `management.port`, and the limits every msa listener keeps.

#![cfg(feature = "discovery")]

#[path = "support/listeners.rs"]
mod listeners;
#[path = "support/registry.rs"]
mod registry;

use msa::core::listener::Limits;

#[tokio::test]
async fn an_apps_actuator_moves_to_its_management_listener_and_is_registered_there() {
    let registry_addr = registry::serve_registry(true).await;

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
    let metadata = registry::registered(registry_addr, "PROBE", 1).await[0]["metadata"].clone();
    assert_eq!(metadata["management.port"], management.port().to_string());
    running.shutdown().await.unwrap();
}
