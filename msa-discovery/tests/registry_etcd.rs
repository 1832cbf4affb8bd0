//! msa-registry on etcd: replicas that share one registry through a real 3-member etcd
//! cluster (Debian's etcd on loopback, throwaway data). 1,000 instances registered across
//! three replicas are read back from each; none is lost when the etcd leader is SIGKILLed
//! during registrations and renewals, and none stays once its lease expires; clients fail
//! over when a replica dies; a frozen etcd member (a partition) leaves the registry serving.

#![cfg(feature = "etcd")]

#[path = "../../tests/support/etcd.rs"]
mod etcd_cluster;

use std::net::SocketAddr;
use std::time::Duration;

use etcd_cluster::{Cluster, shared};
use msa_core::ServiceInstance;
use msa_core::shutdown::Shutdown;
use msa_discovery::discovery::{Discovery, RegistryDiscovery};
use msa_discovery::registration::Registration;
use msa_discovery::registry::{EtcdStore, RegistryServer, Store, StoreConfig};

/// Tests that freeze members take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A registry replica on etcd, serving on a free port until its task is aborted.
struct Replica {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

async fn replica(cluster: &Cluster, prefix: &str) -> Replica {
    let client = msa_core::etcd::LazyClient::new(&cluster.endpoints()).unwrap();
    let server = RegistryServer::new(Store::new(StoreConfig::default()))
        .etcd(EtcdStore::with_client(client, prefix));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let router = server.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Replica {
        url: format!("http://{addr}/eureka"),
        task,
    }
}

/// How many instances `replica` lists.
async fn listed(http: &reqwest::Client, replica: &str) -> usize {
    let Ok(response) = http
        .get(format!("{replica}/apps"))
        .header("accept", "application/json")
        .send()
        .await
    else {
        return usize::MAX;
    };
    let Ok(apps) = response.json::<serde_json::Value>().await else {
        return usize::MAX;
    };
    apps["applications"]["application"]
        .as_array()
        .map_or(0, |apps| {
            apps.iter()
                .map(|app| app["instance"].as_array().map_or(0, Vec::len))
                .sum()
        })
}

/// Waits until every replica lists `count` instances.
async fn every_replica_lists(replicas: &[&str], count: usize, within: Duration, what: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut counts = Vec::new();
        for replica in replicas {
            counts.push(listed(&http, replica).await);
        }
        if counts.iter().all(|&n| n == count) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: replicas list {counts:?}, not {count} each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renews (registering again when told to) every second, until the task is aborted: an
/// instance whose process dies without deregistering.
async fn renew_every_second(registration: Registration) {
    loop {
        if registration.renew().await.is_err() {
            let _ = registration.register().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn instance(service: &str, n: u32) -> ServiceInstance {
    ServiceInstance::new(service, "10.1.0.1", u16::try_from(1000 + n).unwrap())
        .with_id(format!("{service}-{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_instances_across_three_replicas_are_read_back_from_each() {
    let _serial = SERIAL.lock().await;
    let cluster = shared();
    let replicas = [
        replica(cluster, "/thousand").await,
        replica(cluster, "/thousand").await,
        replica(cluster, "/thousand").await,
    ];
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    let mut registering = tokio::task::JoinSet::new();
    for worker in 0..16u32 {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        registering.spawn(async move {
            for n in (worker..1000).step_by(16) {
                let via = &urls[n as usize % urls.len()];
                Registration::new(via, instance(&format!("svc{}", n % 10), n))
                    .register()
                    .await
                    .unwrap();
            }
        });
    }
    registering.join_all().await;
    every_replica_lists(&urls, 1000, Duration::from_secs(10), "1,000 registered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_dies_during_registrations_and_renewals_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let replicas = [
        replica(&cluster, "/msa").await,
        replica(&cluster, "/msa").await,
        replica(&cluster, "/msa").await,
    ];
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    // Each instance renews every second (lease 3 s) through all three replicas in turn.
    let all = urls.join(",");
    let renewing = Shutdown::new();
    // 50 renew from tasks the test will abort: they stop without deregistering.
    let mut dying = tokio::task::JoinSet::new();
    for n in 0..300u32 {
        let registration = Registration::new(&all, instance("orders", n))
            .timings(Duration::from_secs(1), Duration::from_secs(3));
        if n < 50 {
            dying.spawn(renew_every_second(registration));
        } else {
            registration.start(&renewing);
        }
    }
    every_replica_lists(&urls, 300, Duration::from_secs(15), "300 registered").await;

    // The etcd leader dies while 100 more register.
    let killer = {
        let leader = cluster.leader();
        let pid = cluster.pid(leader);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        })
    };
    for n in 300..400u32 {
        Registration::new(&all, instance("orders", n))
            .timings(Duration::from_secs(1), Duration::from_secs(3))
            .start(&renewing);
    }
    killer.await.unwrap();
    every_replica_lists(
        &urls,
        400,
        Duration::from_secs(15),
        "400 after the leader died",
    )
    .await;
    // Two lease lengths on: every lease was renewed through the new leader.
    tokio::time::sleep(Duration::from_secs(6)).await;
    every_replica_lists(&urls, 400, Duration::from_secs(1), "none lost").await;

    // 50 stop renewing without deregistering (their processes died): gone from every
    // replica once their leases expire in etcd, and no stale one stays.
    dying.abort_all();
    every_replica_lists(
        &urls,
        350,
        Duration::from_secs(10),
        "expired instances gone",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    every_replica_lists(&urls, 350, Duration::from_secs(1), "the others still there").await;
    drop(renewing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fail_over_when_a_replica_dies() {
    let _serial = SERIAL.lock().await;
    let cluster = shared();
    let first = replica(cluster, "/failover").await;
    let second = replica(cluster, "/failover").await;
    let both = format!("{},{}", first.url, second.url);
    let discovery = RegistryDiscovery::new(&both);
    let mut payments = discovery.watch("payments");
    Registration::new(&both, instance("payments", 1))
        .register()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), payments.wait_for(|l| l.len() == 1))
        .await
        .expect("listed")
        .unwrap();

    // The first replica dies; a second instance registers through the URLs that are left,
    // and the watch, moved on to the second replica, sees it.
    first.task.abort();
    Registration::new(&both, instance("payments", 2))
        .register()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), payments.wait_for(|l| l.len() == 2))
        .await
        .expect("the watch fails over to the second replica")
        .unwrap();
    second.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_member_leaves_the_registry_serving() {
    let _serial = SERIAL.lock().await;
    let cluster = shared();
    let replicas = [
        replica(cluster, "/frozen").await,
        replica(cluster, "/frozen").await,
    ];
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    // Member 0: the one every replica's client calls and follows through first.
    let frozen = cluster.frozen(0);
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        for n in 0..20u32 {
            let via = urls[n as usize % 2];
            // A write caught on the frozen member is answered 503; the client tries again.
            let mut attempts = 0;
            while Registration::new(via, instance("inventory", n))
                .register()
                .await
                .is_err()
            {
                attempts += 1;
                assert!(attempts < 20, "registration never got through");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        every_replica_lists(
            &urls,
            20,
            Duration::from_secs(15),
            "registered past the frozen member",
        )
        .await;
    })
    .await;
    drop(frozen);
    outcome.expect("the registry kept serving");
}

/// What `replica`'s health says of self-preservation.
async fn preservation(http: &reqwest::Client, replica: &str) -> String {
    let base = replica.trim_end_matches("/eureka");
    let health: serde_json::Value = http
        .get(format!("{base}/actuator/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["components"]["registry"]["details"]["selfPreservation"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Self-preservation counts renewals over a minute, as Eureka's does: this test runs for
/// about 80 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_preservation_is_decided_in_etcd_and_keeps_leases_when_most_renewals_stop() {
    let cluster = shared();
    let replicas = [
        replica(cluster, "/preserve").await,
        replica(cluster, "/preserve").await,
    ];
    let urls: Vec<&str> = replicas.iter().map(|r| r.url.as_str()).collect();
    let all = urls.join(",");
    // Ten instances renew every second (lease 20 s); eight of them from tasks the test
    // will abort, as if a partition cut them off from the registry.
    let renewing = Shutdown::new();
    let mut cut_off = tokio::task::JoinSet::new();
    for n in 0..10u32 {
        let registration = Registration::new(&all, instance("stock", n))
            .timings(Duration::from_secs(1), Duration::from_secs(20));
        if n < 8 {
            cut_off.spawn(renew_every_second(registration));
        } else {
            registration.start(&renewing);
        }
    }
    every_replica_lists(&urls, 10, Duration::from_secs(10), "10 registered").await;
    // A minute of renewals: the expected count is made of leases at least a minute old.
    tokio::time::sleep(Duration::from_secs(62)).await;
    let http = reqwest::Client::new();
    for url in &urls {
        assert_eq!(
            preservation(&http, url).await,
            "OFF",
            "every instance renews"
        );
    }

    // Eight stop renewing: the estate's renewals fall below 85 % (within about 12 s, as
    // the minute's count drops), leases lapse, and the elected replica engages before
    // their 20 s run out; every replica shows it.
    cut_off.abort_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    loop {
        let mut states = Vec::new();
        for url in &urls {
            states.push(preservation(&http, url).await);
        }
        if states.iter().all(|s| s == "ENGAGED") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "self-preservation engaged on every replica: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the cut-off instances' 20 s leases: etcd expired none of them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    every_replica_lists(&urls, 10, Duration::from_secs(1), "preserved").await;
    drop(renewing);
    for replica in replicas {
        replica.task.abort();
    }
}
