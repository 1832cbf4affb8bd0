//! The registry's leases and changes, with tokio's clock paused.

use std::time::Duration;

use msa_core::{InstanceStatus, ServiceInstance};
use msa_discovery::eureka::{ActionType, InstanceInfo, InvalidInstance};
use msa_discovery::registry::{NotFound, Store, StoreConfig};
use tokio::time::advance;

fn info(app: &str, port: u16) -> InstanceInfo {
    InstanceInfo::from_service_instance(&ServiceInstance::new(app, "127.0.0.1", port), 10, 30)
}

#[tokio::test(start_paused = true)]
async fn register_renew_cancel_and_the_delta() {
    let store = Store::new(StoreConfig::default());
    let versions = store.subscribe();
    store.register("orders", info("orders", 8081)).unwrap();
    store.register("ORDERS", info("orders", 8082)).unwrap();
    assert!(versions.has_changed().unwrap());

    let apps = store.applications();
    assert_eq!(apps.application.len(), 1);
    assert_eq!(apps.application[0].name, "ORDERS");
    assert_eq!(apps.application[0].instance.len(), 2);
    assert_eq!(apps.apps_hashcode, "UP_2_");
    assert!(store.instance("orders", "127.0.0.1:orders:8081").is_some());
    assert!(store.find("127.0.0.1:orders:8082").is_some());

    store
        .renew("orders", "127.0.0.1:orders:8081", None)
        .unwrap();
    let missing = store.renew("orders", "nope", None).unwrap_err();
    assert_eq!(
        missing,
        NotFound {
            app: "ORDERS".into(),
            id: "nope".into()
        }
    );

    store.cancel("orders", "127.0.0.1:orders:8081").unwrap();
    assert!(store.cancel("orders", "127.0.0.1:orders:8081").is_err());
    let delta = store.delta();
    let actions: Vec<_> = delta.application[0]
        .instance
        .iter()
        .map(|i| i.action_type)
        .collect();
    assert_eq!(
        actions,
        [
            Some(ActionType::Added),
            Some(ActionType::Added),
            Some(ActionType::Deleted)
        ]
    );
    assert_eq!(
        delta.apps_hashcode, "UP_1_",
        "the delta carries the full registry's hash"
    );

    // Changes older than the retention leave the delta.
    advance(Duration::from_secs(181)).await;
    store
        .renew("orders", "127.0.0.1:orders:8082", None)
        .unwrap();
    store
        .set_metadata(
            "orders",
            "127.0.0.1:orders:8082",
            &[("zone".into(), "b".into())],
        )
        .unwrap();
    let delta = store.delta();
    assert_eq!(delta.application[0].instance.len(), 1);
    assert_eq!(delta.application[0].instance[0].metadata["zone"], "b");
}

#[tokio::test(start_paused = true)]
async fn a_lease_expires_at_last_renewal_plus_its_duration() {
    let store = Store::new(StoreConfig::default());
    let mut short = info("orders", 8081);
    short.lease_info.as_mut().unwrap().duration_in_secs.0 = 20;
    store.register("orders", short).unwrap();

    advance(Duration::from_secs(15)).await;
    store
        .renew("orders", "127.0.0.1:orders:8081", None)
        .unwrap();
    advance(Duration::from_secs(19)).await;
    assert!(
        store.evict().is_empty(),
        "19 s after the renewal: still leased"
    );
    advance(Duration::from_secs(1)).await;
    let evicted = store.evict();
    assert_eq!(
        evicted.len(),
        1,
        "20 s after the renewal: gone, not 40 s as in Eureka"
    );
    assert!(store.applications().application.is_empty());
    assert!(
        store
            .renew("orders", "127.0.0.1:orders:8081", None)
            .is_err(),
        "the client re-registers"
    );
}

/// Ten instances renewing every 10 s, then a partition: nobody renews.
async fn partition(config: StoreConfig) -> (Store, usize) {
    let store = Store::new(config);
    for port in 0..10 {
        store
            .register("orders", info("orders", 9000 + port))
            .unwrap();
    }
    for _ in 0..12 {
        advance(Duration::from_secs(10)).await;
        for port in 0..10 {
            store
                .renew("orders", &format!("127.0.0.1:orders:{}", 9000 + port), None)
                .unwrap();
        }
        assert!(store.evict().is_empty());
    }
    advance(Duration::from_secs(31)).await;
    let evicted = store.evict().len();
    (store, evicted)
}

#[tokio::test(start_paused = true)]
async fn self_preservation_keeps_leases_through_a_partition_unless_turned_off() {
    let (store, evicted) = partition(StoreConfig::default()).await;
    assert_eq!(
        evicted, 0,
        "ten leases lapsing at once look like a partition"
    );
    assert!(store.self_preservation_active());
    assert_eq!(store.applications().application[0].instance.len(), 10);
    // Renewals resume: preservation releases.
    for port in 0..10 {
        store
            .renew("orders", &format!("127.0.0.1:orders:{}", 9000 + port), None)
            .unwrap();
    }
    assert!(store.evict().is_empty());
    assert!(!store.self_preservation_active());

    let (store, evicted) = partition(StoreConfig {
        self_preservation: false,
        ..StoreConfig::default()
    })
    .await;
    assert_eq!(evicted, 10);
    assert!(!store.self_preservation_active());
}

#[tokio::test(start_paused = true)]
async fn overrides_win_survive_reregistration_and_can_be_removed() {
    let store = Store::new(StoreConfig::default());
    let id = "127.0.0.1:orders:8081";
    store.register("orders", info("orders", 8081)).unwrap();
    store
        .set_override("orders", id, InstanceStatus::OutOfService)
        .unwrap();
    assert_eq!(
        store.instance("orders", id).unwrap().status,
        InstanceStatus::OutOfService
    );
    store.register("orders", info("orders", 8081)).unwrap();
    assert_eq!(
        store.instance("orders", id).unwrap().status,
        InstanceStatus::OutOfService
    );
    assert_eq!(store.applications().apps_hashcode, "OUT_OF_SERVICE_1_");

    store.remove_override("orders", id, None).unwrap();
    assert_eq!(
        store.instance("orders", id).unwrap().status,
        InstanceStatus::Unknown
    );
    store.set_status("orders", id, InstanceStatus::Up).unwrap();
    assert_eq!(
        store.instance("orders", id).unwrap().status,
        InstanceStatus::Up
    );
    store
        .remove_override("orders", id, Some(InstanceStatus::Down))
        .unwrap();
    assert_eq!(
        store.instance("orders", id).unwrap().status,
        InstanceStatus::Down
    );
}

#[tokio::test(start_paused = true)]
async fn newer_dirty_timestamps_and_bad_registrations() {
    let store = Store::new(StoreConfig::default());
    let mut registered = info("orders", 8081);
    registered.last_dirty_timestamp.0 = 1_000;
    store.register("orders", registered).unwrap();
    assert!(
        store
            .renew("orders", "127.0.0.1:orders:8081", Some(999))
            .is_ok()
    );
    assert!(
        store
            .renew("orders", "127.0.0.1:orders:8081", Some(1_001))
            .is_err(),
        "the client has newer data: 404"
    );

    let mut bad = info("orders", 8082);
    bad.ip_addr.clear();
    bad.instance_id.clear();
    assert_eq!(
        store.register("orders", bad).unwrap_err(),
        InvalidInstance::Missing(vec!["instanceId", "ipAddr"])
    );
    assert!(matches!(
        store.register("inventory", info("orders", 8083)),
        Err(InvalidInstance::AppMismatch { .. })
    ));
}
