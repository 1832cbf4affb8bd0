//! msa-config-server on etcd: two config servers serve the files a real 3-member etcd
//! cluster holds (Debian's etcd on loopback, throwaway data), by application, profile and
//! label, and a change put in etcd reaches a client watching either server; config
//! clients read the same files from etcd themselves (an `etcd://` URI) and follow them.

#![cfg(feature = "etcd")]

#[path = "../../tests/support/etcd.rs"]
mod etcd_cluster;

use std::net::SocketAddr;
use std::time::Duration;

use msa_config::client::ConfigClient;
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
    let cluster = etcd_cluster::shared();
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

/// `orders.max` as the client's merged properties have it.
fn max(source: &msa_config::client::ConfigServerSource) -> Result<Value, String> {
    source
        .properties()
        .iter()
        .find(|(key, _)| key == "orders.max")
        .map(|(_, value)| value.clone())
        .ok_or_else(|| "no orders.max".to_owned())
}

/// Waits (up to 5 s) until a live client's `orders.max` is `max`.
async fn sees(
    following: &mut tokio::sync::watch::Receiver<std::sync::Arc<Value>>,
    max: i64,
    what: &str,
) {
    tokio::time::timeout(
        Duration::from_secs(5),
        following.wait_for(|v| v.as_i64() == Some(max)),
    )
    .await
    .expect(what)
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_read_etcd_themselves_and_follow_its_changes() {
    let cluster = etcd_cluster::shared();
    let mut etcd = msa_core::etcd::connect(&cluster.endpoints()).await.unwrap();
    for (key, text) in [
        ("/direct/config/main/application.yml", "orders:\n  max: 1\n"),
        ("/direct/config/main/orders.yml", "orders:\n  max: 5\n"),
        (
            "/direct/config/main/orders-dev.properties",
            "orders.max=7\n",
        ),
        ("/direct/config/v2/orders.yml", "orders:\n  max: 9\n"),
    ] {
        etcd.put(key, text, None).await.unwrap();
    }
    let uri = format!("etcd://{}/direct", cluster.endpoints());
    let client = |profiles: &str| ConfigClient::new("orders").uri(&uri).profiles(profiles);

    // Resolved as a config server resolves them: profile over application over shared.
    let dev = client("dev").live_with(max).await.unwrap();
    assert_eq!(*dev.get(), Value::from("7"));
    let plain = client("default").live_with(max).await.unwrap();
    assert_eq!(*plain.get(), Value::from(5));
    let v2 = client("default").label("v2").fetch_once().await.unwrap();
    assert_eq!(v2.environment.property_sources.len(), 1);
    let missing = client("default").label("nope").fetch_once().await;
    assert!(
        missing.is_err_and(|e| e.to_string().contains("nope")),
        "a label with no file is an error"
    );

    // A change put in etcd reaches the clients through their watch.
    let mut following = plain.subscribe();
    etcd.put(
        "/direct/config/main/orders.yml",
        "orders:\n  max: 6\n",
        None,
    )
    .await
    .unwrap();
    sees(&mut following, 6, "the change reaches the client").await;
    assert_eq!(*dev.get(), Value::from("7"), "the profile still wins");

    // A file that does not parse is an error, as a config server answers it (500); a
    // live client keeps its last good value and takes the next good file.
    etcd.put(
        "/direct/config/main/orders.yml",
        "orders: [unclosed\n",
        None,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match client("default").fetch_once().await {
            Err(error) if error.to_string().contains("orders.yml") => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*plain.get(), Value::from(6));
    etcd.put(
        "/direct/config/main/orders.yml",
        "orders:\n  max: 8\n",
        None,
    )
    .await
    .unwrap();
    sees(&mut following, 8, "the next good file reaches the client").await;
}
