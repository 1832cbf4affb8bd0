//! The config client against a real msa-config-server over real HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use msa_config::client::{ClientError, ConfigClient};
use msa_config::server::{ConfigServer, DirRepository};
use serde::Deserialize;
use tokio::time::timeout as within;

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

async fn serve(dir: &Path, auth: Option<(&str, &str)>) -> SocketAddr {
    let mut server = ConfigServer::new(DirRepository::open(dir).unwrap());
    if let Some((user, password)) = auth {
        server = server.basic_auth(user, password);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

/// A port nothing listens on.
async fn dead_uri() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[derive(Debug, Deserialize, PartialEq)]
struct Shop {
    price: u32,
    currency: String,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Settings {
    shop: Shop,
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        "shop:\n  currency: EUR\n  features: [a, b, c]\n",
    );
    write(
        dir.path(),
        "orders.yml",
        "shop:\n  price: 5\n  features: [x]\n",
    );
    write(dir.path(), "orders-dev.yml", "shop:\n  price: 6\n");
    dir
}

#[tokio::test]
async fn the_server_source_layers_with_local_files_and_deserializes() {
    let dir = repo();
    let addr = serve(dir.path(), None).await;
    let source = ConfigClient::new("orders")
        .uri(format!("http://{addr}"))
        .profiles("dev")
        .source()
        .await
        .unwrap();
    let settings: Settings = config::Config::builder()
        .add_source(config::File::from_str(
            "shop:\n  currency: USD\n",
            config::FileFormat::Yaml,
        ))
        .add_source(source.clone())
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    // The server's value wins over the file added before it; lists are replaced whole.
    assert_eq!(
        settings.shop,
        Shop {
            price: 6,
            currency: "EUR".into(),
            features: vec!["x".into()]
        }
    );
    // Added after it, a local override wins.
    let settings: Settings = config::Config::builder()
        .add_source(source)
        .set_override("shop.price", 99)
        .unwrap()
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(settings.shop.price, 99);
}

#[tokio::test]
async fn uris_are_tried_in_turn_with_basic_auth() {
    let dir = repo();
    let addr = serve(dir.path(), Some(("config", "pw"))).await;
    let client = ConfigClient::new("orders").uris([dead_uri().await, format!("http://{addr}")]);
    let error = client.fetch_once().await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
    let fetched = client
        .basic_auth("config", "pw")
        .fetch_once()
        .await
        .unwrap();
    assert_eq!(fetched.environment.name, "orders");
    assert!(fetched.etag.is_some());
}

#[tokio::test]
async fn a_server_down_at_start_falls_back_to_the_cached_copy() {
    let dir = repo();
    let cache = tempfile::tempdir().unwrap();
    let cache_file = cache.path().join("orders.json");
    let addr = serve(dir.path(), None).await;
    // A first start with the server up leaves a copy.
    ConfigClient::new("orders")
        .uri(format!("http://{addr}"))
        .cache_file(&cache_file)
        .fetch()
        .await
        .unwrap();
    assert!(cache_file.exists());

    let dead = dead_uri().await;
    let settings: Settings = config::Config::builder()
        .add_source(
            ConfigClient::new("orders")
                .uri(&dead)
                .cache_file(&cache_file)
                .fail_fast(true)
                .retry(2, Duration::from_millis(1), 1.1, Duration::from_millis(2))
                .source()
                .await
                .unwrap(),
        )
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(settings.shop.price, 5);

    // Without a copy: fail-fast fails, and without fail-fast the service starts empty.
    let error = ConfigClient::new("orders")
        .uri(&dead)
        .fail_fast(true)
        .retry(2, Duration::from_millis(1), 1.1, Duration::from_millis(2))
        .source()
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    let empty = ConfigClient::new("orders")
        .uri(&dead)
        .source()
        .await
        .unwrap();
    assert!(empty.properties().is_empty());
}

#[tokio::test]
async fn live_config_follows_edits_and_rejects_invalid_ones() {
    let dir = repo();
    let addr = serve(dir.path(), None).await;
    let live = ConfigClient::new("orders")
        .uri(format!("http://{addr}"))
        .live_validated(
            |server| config::Config::builder().add_source(server),
            |s: &Settings| {
                if s.shop.price == 0 {
                    Err("shop.price must be positive".into())
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(live.get().shop.price, 5);
    let mut values = live.subscribe();
    let mut changes = live.changes();
    let mut rejections = live.rejections();

    write(
        dir.path(),
        "orders.yml",
        "shop:\n  price: 7\n  features: [x]\n",
    );
    within(Duration::from_secs(10), values.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values.borrow_and_update().shop.price, 7);
    let changed = within(Duration::from_secs(10), changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.keys, ["shop.price"]);

    // An invalid value is rejected and the old one kept.
    write(
        dir.path(),
        "orders.yml",
        "shop:\n  price: 0\n  features: [x]\n",
    );
    let rejected = within(Duration::from_secs(10), rejections.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(rejected.reason.contains("must be positive"), "{rejected:?}");
    assert_eq!(live.get().shop.price, 7);
    // So is one that does not deserialize.
    write(dir.path(), "orders.yml", "shop:\n  price: lots\n");
    let rejected = within(Duration::from_secs(10), rejections.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(rejected.reason.contains("price"), "{rejected:?}");
    assert_eq!(live.get().shop.price, 7);

    write(
        dir.path(),
        "orders.yml",
        "shop:\n  price: 9\n  features: [x]\n",
    );
    within(Duration::from_secs(10), values.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values.borrow_and_update().shop.price, 9);

    // A forced refresh reports nothing new; a refresh that finds a bad file fails.
    assert_eq!(live.refresh().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn actuator_refresh_fetches_at_once_and_reports_the_changed_keys() {
    use msa_core::actuator::Actuator;

    let dir = repo();
    let addr = serve(dir.path(), None).await;
    // Refresh-only: the value changes when refreshed, never on its own.
    let client = ConfigClient::new("orders")
        .uri(format!("http://{addr}"))
        .follow(false);
    let before = client.fetch_once().await.unwrap();
    let live: msa_config::client::LiveConfig<Settings> = client
        .live(|server| config::Config::builder().add_source(server))
        .await
        .unwrap();
    let app = Actuator::new("orders")
        .on_refresh("config", live.refresh_hook())
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let refresh = || async {
        reqwest::Client::new()
            .post(format!("http://{service}/actuator/refresh"))
            .send()
            .await
            .unwrap()
            .json::<Vec<String>>()
            .await
            .unwrap()
    };
    assert!(refresh().await.is_empty(), "nothing changed yet");

    write(
        dir.path(),
        "orders.yml",
        "shop:\n  price: 12\n  currency: GBP\n",
    );
    // Wait (on the server's watch API) until the server serves the edit.
    let seen = within(
        Duration::from_secs(10),
        reqwest::Client::new()
            .get(format!("http://{addr}/_msa/watch/orders/default?wait=10s"))
            .header("if-none-match", before.etag.unwrap())
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(seen.status(), 200);
    assert_eq!(
        live.get().shop.price,
        5,
        "not followed: unchanged until refreshed"
    );

    let keys = refresh().await;
    assert_eq!(
        keys,
        [
            "shop.currency",
            "shop.features[0]",
            "shop.features[1]",
            "shop.features[2]",
            "shop.price"
        ]
    );
    assert_eq!(live.get().shop.price, 12);
    assert_eq!(live.get().shop.currency, "GBP");
}

/// A Spring Cloud Config Server has no watch API. The client then polls: shown through a
/// proxy in front of msa-config-server that answers 404 for `/_msa/watch` as Spring does
/// (no Spring server can be installed where these tests run).
#[tokio::test]
async fn against_a_server_without_the_watch_api_the_client_polls() {
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;

    let dir = repo();
    let upstream = serve(dir.path(), None).await;
    let proxy = axum::Router::new()
        .fallback(
            |State(upstream): State<SocketAddr>, req: Request| async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                if path.starts_with("/_msa/") {
                    return (axum::http::StatusCode::NOT_FOUND, "no such endpoint").into_response();
                }
                let response = reqwest::get(format!("http://{upstream}{path}"))
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap();
                (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
            },
        )
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spring_like = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await.unwrap() });

    let live: msa_config::client::LiveConfig<Settings> = ConfigClient::new("orders")
        .uri(format!("http://{spring_like}"))
        .poll_interval(Duration::from_millis(50))
        .live(|server| config::Config::builder().add_source(server))
        .await
        .unwrap();
    assert_eq!(live.get().shop.price, 5);
    let mut values = live.subscribe();
    write(dir.path(), "orders.yml", "shop:\n  price: 8\n");
    within(Duration::from_secs(10), async {
        while values.borrow_and_update().shop.price != 8 {
            values.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_cached_copy_is_private_follows_live_reloads_and_holds_no_secret() {
    use msa_config::server::Cipher;
    let dir = repo();
    let cipher = Cipher::new(b"test key material, not for production").unwrap();
    let sealed = cipher.encrypt("hunter2").unwrap();
    let secrets = format!(
        "db:\n  password: '{{cipher}}{sealed}'\nfeed:\n  url: http://bot:hunter2@feed.example\n  api-key: hunter2\n"
    );
    write(dir.path(), "orders-prod.yml", &secrets);
    let server = ConfigServer::new(DirRepository::open(dir.path()).unwrap()).cipher(cipher);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });

    let cache = tempfile::tempdir().unwrap();
    let cache_file = cache.path().join("orders.json");
    let live = ConfigClient::new("orders")
        .uri(format!("http://{addr}"))
        .profiles("prod")
        .cache_file(&cache_file)
        .live(|server| config::Config::builder().add_source(server))
        .await
        .unwrap();
    let first: std::sync::Arc<Settings> = live.get();
    assert_eq!(first.shop.price, 5);

    let text = std::fs::read_to_string(&cache_file).unwrap();
    assert!(text.contains("shop.price"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "a secret reached the disk: {text}"
    );
    assert!(!text.contains("db.password") && !text.contains("feed.api-key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A change the client follows is written to the copy as well.
    write(dir.path(), "orders.yml", "shop:\n  price: 9\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&cache_file)
        .unwrap()
        .contains("\"shop.price\": 9")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy kept the old price"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
