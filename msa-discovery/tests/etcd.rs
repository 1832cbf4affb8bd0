//! Discovery and registration straight on a real 3-member etcd cluster (Debian's etcd on
//! loopback, throwaway data): instances are found and follow their leases, none is lost
//! when the etcd leader is SIGKILLed during renewals, and a frozen member (a partition)
//! leaves the other two serving.

#![cfg(feature = "etcd")]

#[path = "../../tests/support/etcd.rs"]
mod etcd_cluster;

use std::time::Duration;

use etcd_cluster::{Cluster, shared};
use msa_core::ServiceInstance;
use msa_core::etcd::LazyClient;
use msa_core::shutdown::Shutdown;
use msa_discovery::discovery::{Discovery, Instances};
use msa_discovery::etcd::{EtcdDiscovery, EtcdRegistration};
use tokio::sync::watch;

/// Tests that freeze members take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client of `members` of the cluster.
fn client(cluster: &Cluster, members: &[usize]) -> LazyClient {
    let list: Vec<&str> = members
        .iter()
        .map(|&m| cluster.members[m].client_url.as_str())
        .collect();
    LazyClient::new(&list.join(",")).unwrap()
}

async fn until(
    rx: &mut watch::Receiver<Instances>,
    what: &str,
    within: Duration,
    done: impl Fn(&Instances) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(&rx.borrow_and_update()) {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "never within {within:?}: {what}; {} listed",
                    rx.borrow().len()
                )
            })
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_follow_their_leases() {
    let _serial = SERIAL.lock().await;
    let cluster = shared();
    let client = client(cluster, &[0, 1, 2]);
    let discovery = EtcdDiscovery::with_prefix(client.clone(), "/leases-test");
    let mut orders = discovery.watch("ORDERS");

    // Registered and renewed: listed, with its fields.
    let shutdown = Shutdown::new();
    let kept = EtcdRegistration::with_prefix(
        client.clone(),
        ServiceInstance::new("orders", "10.0.0.1", 8081)
            .with_id("orders-1")
            .with_zone("a"),
        "/leases-test",
    )
    .lease(Duration::from_secs(2))
    .start(&shutdown);
    assert_eq!(kept.key(), "/leases-test/services/orders/orders-1");
    // Registered once and never renewed: gone when its lease expires.
    let dead = EtcdRegistration::with_prefix(
        client.clone(),
        ServiceInstance::new("orders", "10.0.0.2", 8081).with_id("orders-2"),
        "/leases-test",
    )
    .lease(Duration::from_secs(2));
    dead.register().await.unwrap();
    until(&mut orders, "both listed", Duration::from_secs(5), |list| {
        list.len() == 2
    })
    .await;
    let first = orders
        .borrow()
        .iter()
        .find(|i| i.id == "orders-1")
        .cloned()
        .unwrap();
    assert_eq!(
        (first.host.as_str(), first.zone.as_deref()),
        ("10.0.0.1", Some("a"))
    );
    until(
        &mut orders,
        "orders-2 expired",
        Duration::from_secs(5),
        |list| list.len() == 1 && list[0].id == "orders-1",
    )
    .await;
    // Several lease lengths later the renewed one is still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(orders.borrow().len(), 1);
    assert!(kept.is_registered());

    // A clean stop revokes the lease: gone at once.
    shutdown.trigger();
    shutdown.draining().await;
    until(
        &mut orders,
        "orders-1 deregistered",
        Duration::from_millis(500),
        |list| list.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_leaves_the_other_two_serving() {
    let _serial = SERIAL.lock().await;
    let cluster = shared();
    let writer = client(cluster, &[0, 1, 2]);
    // The reader follows through member 0 first, so it has to move off it.
    let reader = client(cluster, &[0, 1, 2]);
    let discovery = EtcdDiscovery::with_prefix(reader, "/partition-test");
    let mut payments = discovery.watch("payments");
    let frozen = cluster.frozen(0);
    let shutdown = Shutdown::new();
    let registration = EtcdRegistration::with_prefix(
        writer,
        ServiceInstance::new("payments", "10.0.0.3", 8082).with_id("payments-1"),
        "/partition-test",
    )
    .lease(Duration::from_secs(3))
    .start(&shutdown);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        until(
            &mut payments,
            "payments-1 registered past the frozen member",
            Duration::from_secs(10),
            |list| list.len() == 1,
        )
        .await;
    })
    .await;
    drop(frozen);
    seen.unwrap();
    assert!(registration.is_registered());
    shutdown.trigger();
    shutdown.draining().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_is_lost_when_the_etcd_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let client = client(&cluster, &[0, 1, 2]);
    let discovery = EtcdDiscovery::with_prefix(client.clone(), "/kill-test");
    let mut inventory = discovery.watch("inventory");
    let shutdown = Shutdown::new();
    let registrations: Vec<EtcdRegistration> = (0..100)
        .map(|n| {
            EtcdRegistration::with_prefix(
                client.clone(),
                ServiceInstance::new("inventory", "10.0.1.1", 9000 + n)
                    .with_id(format!("inventory-{n}")),
                "/kill-test",
            )
            .lease(Duration::from_secs(3))
            .start(&shutdown)
        })
        .collect();
    until(
        &mut inventory,
        "100 registered",
        Duration::from_secs(20),
        |list| list.len() == 100,
    )
    .await;

    // Renewals go on while the leader dies and the other two elect another.
    let leader = cluster.leader();
    cluster.kill(leader);
    // Two lease lengths: every lease needed renewing through the new leader.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(inventory.borrow().len(), 100, "an instance was lost");
    assert!(registrations.iter().all(EtcdRegistration::is_registered));
    // The watch goes on: one more instance arrives, one leaves.
    let late = EtcdRegistration::with_prefix(
        client.clone(),
        ServiceInstance::new("inventory", "10.0.1.2", 9999).with_id("inventory-late"),
        "/kill-test",
    );
    late.register().await.unwrap();
    registrations[0].deregister().await.unwrap();
    until(
        &mut inventory,
        "the late one in, the first out",
        Duration::from_secs(5),
        |list| {
            list.len() == 100
                && list.iter().any(|i| i.id == "inventory-late")
                && !list.iter().any(|i| i.id == "inventory-0")
        },
    )
    .await;
    shutdown.trigger();
    shutdown.draining().await;
}
