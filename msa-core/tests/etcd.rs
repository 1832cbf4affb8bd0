//! Leader election on a real 3-member etcd cluster (Debian's etcd, on loopback): one
//! leader at a time, the next one leads when the leader resigns, and a leader cut off from
//! etcd (its member frozen, as behind a partition) loses leadership to one that is not.

#![cfg(feature = "etcd")]

#[path = "../../tests/support/etcd.rs"]
mod etcd_cluster;

use std::time::Duration;

use msa_core::etcd::{self, Election};

/// The tests freeze members: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_and_the_next_leads_when_it_resigns() {
    let _serial = SERIAL.lock().await;
    let url = format!("etcd://{}", etcd_cluster::shared().endpoints());
    let client = etcd::connect(&url).await.unwrap();
    let first = Election::new(client.clone(), "resign-test", "a").ttl(Duration::from_secs(5));
    let second = Election::new(client, "resign-test", "b").ttl(Duration::from_secs(5));
    let leading = first.campaign().await.unwrap();
    assert!(leading.is_leading());
    assert_eq!(first.leader().await.unwrap().as_deref(), Some("a"));
    let waiting = tokio::spawn(async move { second.campaign().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "b must wait while a leads");
    leading.resign().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("b leads once a resigned")
        .unwrap()
        .unwrap();
    assert!(next.is_leading());
    assert_eq!(first.leader().await.unwrap().as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_loses_to_one_that_is_not() {
    let _serial = SERIAL.lock().await;
    let cluster = etcd_cluster::shared();
    // a talks to member 0 only; b to the other two.
    let only = |members: &[usize]| {
        let list: Vec<String> = members
            .iter()
            .map(|&m| cluster.members[m].client_url.clone())
            .collect();
        format!("etcd://{}", list.join(","))
    };
    let a = etcd::connect(&only(&[0])).await.unwrap();
    let b = etcd::connect(&only(&[1, 2])).await.unwrap();
    let ttl = Duration::from_secs(2);
    let leading = Election::new(a, "partition-test", "a")
        .ttl(ttl)
        .campaign()
        .await
        .unwrap();
    let observer = Election::new(b.clone(), "partition-test", "b").ttl(ttl);
    let waiting = {
        let b = observer.clone();
        tokio::spawn(async move { b.campaign().await })
    };
    let frozen = cluster.frozen(0);
    let lost = tokio::time::timeout(Duration::from_secs(10), leading.lost()).await;
    let next = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    drop(frozen);
    lost.expect("a knows it lost leadership");
    let next = next.expect("b leads").unwrap().unwrap();
    assert!(next.is_leading());
    assert!(!leading.is_leading());
    assert_eq!(observer.leader().await.unwrap().as_deref(), Some("b"));
}
