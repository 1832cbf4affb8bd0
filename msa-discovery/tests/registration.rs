//! Registration against the real msa-registry binary: register, survive a registry
//! restart by registering again, deregister on shutdown.

use std::time::Duration;

use msa_core::ServiceInstance;
use msa_core::shutdown::Shutdown;
use msa_discovery::registration::Registration;

mod common;
use common::{Registry, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_survives_a_registry_restart_and_deregisters_on_shutdown() {
    let port = free_port();
    let registry = Registry::start(port);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    let _registration = Registration::new(
        format!("http://127.0.0.1:{port}/eureka"),
        ServiceInstance::new("orders", "127.0.0.1", service_port),
    )
    .timings(Duration::from_millis(200), Duration::from_secs(3))
    .start(&shutdown);
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.serve(listener, axum::Router::new()).await }
    });

    let answer = common::wait_for(port, "orders", 1).await;
    assert_eq!(answer["instances"][0]["port"], service_port);

    // The registry restarts with nothing: the next renewal gets 404 and registers again.
    drop(registry);
    let _registry = Registry::start(port);
    let answer = common::wait_for(port, "orders", 1).await;
    assert_eq!(answer["instances"][0]["status"], "UP");

    // Shutdown deregisters before draining.
    shutdown.trigger();
    server.await.unwrap().unwrap();
    common::wait_for(port, "orders", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_the_registry_and_keeps_the_last_list_while_it_is_down() {
    use msa_discovery::discovery::{Discovery, RegistryDiscovery};

    let port = free_port();
    let registry = Registry::start(port);
    let shutdown = Shutdown::new();
    let _registration = Registration::new(
        format!("http://127.0.0.1:{port}/eureka"),
        ServiceInstance::new("orders", "127.0.0.1", 7001),
    )
    .timings(Duration::from_millis(200), Duration::from_secs(3))
    .start(&shutdown);

    let discovery = RegistryDiscovery::new(format!("http://127.0.0.1:{port}"));
    let mut orders = discovery.watch("ORDERS");
    let within = |rx: &mut tokio::sync::watch::Receiver<_>| {
        let mut rx = rx.clone();
        async move { tokio::time::timeout(Duration::from_secs(20), rx.changed()).await }
    };
    while orders.borrow_and_update().is_empty() {
        within(&mut orders).await.unwrap().unwrap();
        orders.borrow_and_update();
    }
    assert_eq!(discovery.instances("orders")[0].port, 7001);

    // An operator takes it out of service: the change arrives through the watch.
    let client = reqwest::Client::new();
    let status = client
        .put(format!("http://127.0.0.1:{port}/eureka/apps/ORDERS/127.0.0.1:orders:7001/status?value=OUT_OF_SERVICE"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let mut changes = discovery.watch("orders");
    while changes.borrow_and_update()[0].status != msa_core::InstanceStatus::OutOfService {
        tokio::time::timeout(Duration::from_secs(20), changes.changed())
            .await
            .unwrap()
            .unwrap();
    }

    // The registry goes down: the last known list stays.
    drop(registry);
    let quiet = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
    assert!(
        quiet.is_err(),
        "no change while the registry is unreachable"
    );
    assert_eq!(discovery.instances("orders").len(), 1);

    // It comes back empty; the registration fills it again, and discovery follows.
    let _registry = Registry::start(port);
    loop {
        tokio::time::timeout(Duration::from_secs(20), changes.changed())
            .await
            .unwrap()
            .unwrap();
        let now = changes.borrow_and_update().clone();
        if now.len() == 1 && now[0].status == msa_core::InstanceStatus::Up {
            break;
        }
    }
}

#[tokio::test]
async fn a_registry_urls_password_stays_out_of_errors() {
    // Spring's defaultZone often carries credentials: none of the URLs answers here.
    let (a, b) = (free_port(), free_port());
    let zone = format!(
        "http://eureka:s3cret@127.0.0.1:{a}/eureka/,http://eureka:s3cret@127.0.0.1:{b}/eureka/"
    );
    let registration = Registration::new(zone, ServiceInstance::new("orders", "127.0.0.1", 8081));
    let error = registration.register().await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{b}")),
        "the last URL tried is named: {shown}"
    );
}
