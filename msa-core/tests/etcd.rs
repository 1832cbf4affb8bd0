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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_runs_on_one_replica_and_moves_when_it_stops() {
    use std::sync::{Arc, Mutex};
    use tokio::sync::watch;

    let _serial = SERIAL.lock().await;
    let url = format!("etcd://{}", etcd_cluster::shared().endpoints());
    let client = etcd::connect(&url).await.unwrap();
    let running: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    // Every start of the work, with who was running then.
    let starts: Arc<Mutex<Vec<Vec<&'static str>>>> = Arc::default();
    let (changed, mut changes) = watch::channel(());
    let replica = |name: &'static str| {
        let election =
            Election::new(client.clone(), "lead-test", name).ttl(Duration::from_secs(10));
        let (stop, stopped) = watch::channel(false);
        let (running, changed, starts) = (running.clone(), changed.clone(), starts.clone());
        let task = tokio::spawn(async move {
            election
                .lead(
                    |mut halt| {
                        let (running, changed) = (running.clone(), changed.clone());
                        starts.lock().unwrap().push(running.lock().unwrap().clone());
                        async move {
                            running.lock().unwrap().push(name);
                            changed.send_replace(());
                            let _ = halt.wait_for(|halt| *halt).await;
                            running.lock().unwrap().retain(|n| *n != name);
                            changed.send_replace(());
                        }
                    },
                    stopped,
                )
                .await;
        });
        (stop, task)
    };
    let (stop_a, a) = replica("a");
    let (stop_b, b) = replica("b");
    until(&running, &mut changes, "one leads", |r| r.len() == 1).await;
    let first = running.lock().unwrap()[0];
    // The leader stops: its work halts and it resigns, so the other leads at once (well
    // before the 10 s its lease would take to lapse).
    let (stop_first, stop_other, other) = match first {
        "a" => (stop_a, stop_b, "b"),
        _ => (stop_b, stop_a, "a"),
    };
    stop_first.send_replace(true);
    until(&running, &mut changes, "the other leads", |r| r == [other]).await;
    stop_other.send_replace(true);
    until(&running, &mut changes, "nobody runs", |r| r.is_empty()).await;
    a.await.unwrap();
    b.await.unwrap();
    let observer = Election::new(client, "lead-test", "observer");
    assert_eq!(observer.leader().await.unwrap(), None, "both resigned");
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 2, "each ran once: {starts:?}");
    assert!(
        starts.iter().all(Vec::is_empty),
        "never two at once: {starts:?}"
    );
}

/// Waits (up to 5 s) until the replicas running their work satisfy `done`.
async fn until(
    running: &std::sync::Mutex<Vec<&'static str>>,
    changes: &mut tokio::sync::watch::Receiver<()>,
    what: &str,
    done: impl Fn(&[&str]) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !done(&running.lock().unwrap()) {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what}: running {:?}",
        running.lock().unwrap()
    );
}
