//! msa-config-server on etcd: two config servers serve the files a real 3-member etcd
//! cluster holds (Debian's etcd on loopback, throwaway data), by application, profile and
//! label, and a change put in etcd reaches a client watching either server.

#![cfg(feature = "etcd")]

#[path = "../../tests/support/etcd.rs"]
mod etcd_cluster;

use std::net::SocketAddr;
use std::time::Duration;

use etcd_cluster::Cluster;
use msa_config::server::{ConfigServer, EtcdRepository};
use serde_json::Value;

async fn serve(repository: EtcdRepository) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = ConfigServer::new(repository).router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn get(server: SocketAddr, path: &str) -> (u16, Value, String) {
    let response = reqwest::get(format!("http://{server}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, response.json().await.unwrap_or(Value::Null), etag)
}

/// The value of `key` in the first property source that has it.
fn property(env: &Value, key: &str) -> Value {
    env["propertySources"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|source| source["source"].get(key).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_serve_etcd_files_and_changes_reach_watching_clients() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let mut client = msa_core::etcd::connect(&cluster.endpoints()).await.unwrap();
    for (key, text) in [
        (
            "/msa/config/main/application.yml",
            "shop:\n  currency: EUR\n",
        ),
        ("/msa/config/main/orders.yml", "orders:\n  max: 5\n"),
        ("/msa/config/main/orders-dev.properties", "orders.max=7\n"),
        ("/msa/config/v2/orders.yml", "orders:\n  max: 9\n"),
    ] {
        client.put(key, text, None).await.unwrap();
    }
    let repository = |client| EtcdRepository::with_client(client, "/msa", "main", "etcd:");
    let first = serve(repository(client.clone())).await;
    let second = serve(repository(client.clone())).await;

    for server in [first, second] {
        let (status, env, _) = get(server, "/orders/default").await;
        assert_eq!(status, 200, "{env}");
        assert_eq!(property(&env, "orders.max"), 5);
        assert_eq!(property(&env, "shop.currency"), "EUR");
        let (_, dev, _) = get(server, "/orders/dev").await;
        assert_eq!(property(&dev, "orders.max"), "7", "{dev}");
        let (_, v2, _) = get(server, "/orders/default/v2").await;
        assert_eq!(property(&v2, "orders.max"), 9, "{v2}");
        let (missing, _, _) = get(server, "/orders/default/nope").await;
        assert_eq!(missing, 404);
    }

    // A client watches the second server; the change is put in etcd.
    let (_, _, etag) = get(second, "/orders/default").await;
    let watching = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!(
                "http://{second}/_msa/watch/orders/default?wait=20s"
            ))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .put("/msa/config/main/orders.yml", "orders:\n  max: 6\n", None)
        .await
        .unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("the watching client hears of the change")
        .unwrap();
    assert_eq!(property(&changed, "orders.max"), 6, "{changed}");
    let (_, env, _) = get(first, "/orders/default").await;
    assert_eq!(property(&env, "orders.max"), 6);

    // A file deleted from etcd is no longer served.
    client
        .delete("/msa/config/main/orders-dev.properties", None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, dev, _) = get(first, "/orders/dev").await;
        if property(&dev, "orders.max") == 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{dev}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
