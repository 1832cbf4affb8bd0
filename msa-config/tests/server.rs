//! msa-config-server's HTTP API over a real directory, over real HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use msa_config::server::{ConfigServer, DirRepository, Environment};
use serde_json::{Value, json};

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A repository with shared and per-application files in several formats.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "application.yml",
        "shared: from-application\nlevel: application\nlist: [a1, a2, a3]\nsecret-ref: ${level}\n",
    );
    write(
        d,
        "application-dev.yml",
        "level: application-dev\ndev-only: true\n",
    );
    write(
        d,
        "orders.yml",
        "level: orders\nserver:\n  port: 8081\nlist: [o1]\n",
    );
    write(
        d,
        "orders-dev.properties",
        "level=orders-dev\nserver.port=9091\n",
    );
    write(
        d,
        "orders-eu.json",
        r#"{"level": "orders-eu", "region": "eu"}"#,
    );
    write(d, "team/billing.toml", "level = \"billing\"\n");
    dir
}

/// Management settings for a server on 127.0.0.1 without a token.
fn loopback() -> msa_core::management::Management {
    msa_core::management::Management::none("127.0.0.1:8888".parse().unwrap())
}

async fn serve(server: ConfigServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{addr}{path}")).await.unwrap()
}

async fn environment(addr: SocketAddr, path: &str) -> Environment {
    let response = get(addr, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn source_names(env: &Environment) -> Vec<&str> {
    env.property_sources
        .iter()
        .map(|s| s.name.rsplit('/').next().unwrap())
        .collect()
}

/// Waits (event-driven, through the watch API) until `path`'s environment differs from
/// the one with `etag`.
async fn next_version(addr: SocketAddr, app_profiles: &str, etag: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{addr}/_msa/watch/{app_profiles}?wait=20s"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sources_come_most_specific_first_across_profiles() {
    let repo = repository();
    let addr = serve(ConfigServer::new(DirRepository::open(repo.path()).unwrap())).await;

    let env = environment(addr, "/orders/dev,eu").await;
    assert_eq!(env.name, "orders");
    assert_eq!(env.profiles, ["dev", "eu"]);
    assert_eq!(env.label, None);
    // The last profile wins; the application's own file beats the shared one.
    assert_eq!(
        source_names(&env),
        [
            "orders-eu.json",
            "orders-dev.properties",
            "application-dev.yml",
            "orders.yml",
            "application.yml"
        ]
    );
    assert_eq!(env.property_sources[1].source["server.port"], "9091");
    assert!(env.property_sources[0].name.starts_with("file:"));
    assert_eq!(env.property_sources[3].source["list[0]"], "o1");

    let env = environment(addr, "/orders/default/main").await;
    assert_eq!(env.label.as_deref(), Some("main"));
    assert_eq!(source_names(&env), ["orders.yml", "application.yml"]);

    // An unknown application still gets the shared files; an application named with
    // `(_)` reads from a subdirectory.
    let env = environment(addr, "/nobody/default").await;
    assert_eq!(source_names(&env), ["application.yml"]);
    let env = environment(addr, "/team(_)billing/default").await;
    assert_eq!(env.name, "team/billing");
    assert_eq!(source_names(&env), ["billing.toml", "application.yml"]);
}

#[tokio::test]
async fn flat_views_merge_with_lists_replaced_whole() {
    let repo = repository();
    write(repo.path(), "order-service.yml", "name: order-service\n");
    let addr = serve(ConfigServer::new(DirRepository::open(repo.path()).unwrap())).await;

    let json: Value = get(addr, "/orders-dev.json").await.json().await.unwrap();
    assert_eq!(json["level"], "orders-dev");
    assert_eq!(json["server"]["port"], "9091");
    assert_eq!(json["shared"], "from-application");
    assert_eq!(json["dev-only"], true);
    // orders.yml's one-element list replaces application.yml's three, not index by index.
    assert_eq!(json["list"], json!(["o1"]));
    // Placeholders resolve against the merged view, unless asked not to.
    assert_eq!(json["secret-ref"], "orders-dev");
    let raw: Value = get(addr, "/orders-dev.json?resolvePlaceholders=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(raw["secret-ref"], "${level}");

    let properties = get(addr, "/main/orders-dev.properties")
        .await
        .text()
        .await
        .unwrap();
    assert!(properties.contains("level: orders-dev\n"), "{properties}");
    assert!(
        properties.contains("list[0]: o1\n") && !properties.contains("list[1]"),
        "{properties}"
    );

    let response = get(addr, "/orders-dev.yml").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/yaml; charset=utf-8"
    );
    let yaml = response.text().await.unwrap();
    assert!(yaml.contains("level: orders-dev"), "{yaml}");
    assert!(yaml.contains("port: \"9091\""), "{yaml}");

    // A hyphenated application name: the profile is after the last `-`.
    let json: Value = get(addr, "/order-service-default.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["name"], "order-service");
    assert_eq!(get(addr, "/orders-dev.txt").await.status(), 404);
}

#[tokio::test]
async fn a_broken_file_fails_only_its_readers_naming_file_and_line() {
    let repo = repository();
    write(repo.path(), "payments.yml", "ok: 1\nbad: [1, 2\nnext: 3\n");
    let addr = serve(ConfigServer::new(DirRepository::open(repo.path()).unwrap())).await;

    let response = get(addr, "/payments/default").await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("payments.yml:3:"),
        "names file and line: {message}"
    );
    assert_eq!(get(addr, "/payments-default.yml").await.status(), 500);

    // Others are unaffected, and health reports the broken file without going down.
    environment(addr, "/orders/default").await;
    let health: Value = get(addr, "/actuator/health").await.json().await.unwrap();
    assert_eq!(health["status"], "UP");
    let broken = &health["components"]["repository"]["details"]["broken"];
    assert!(
        broken[0].as_str().unwrap().starts_with("payments.yml:"),
        "{health}"
    );
}

#[tokio::test]
async fn basic_auth_guards_everything_but_health() {
    let repo = repository();
    let server =
        ConfigServer::new(DirRepository::open(repo.path()).unwrap()).basic_auth("config", "s3cret");
    let addr = serve(server).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/orders/default");

    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = client
        .get(&url)
        .basic_auth("config", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(&url)
        .basic_auth("config", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(get(addr, "/actuator/health").await.status(), 200);
}

#[tokio::test]
async fn edits_are_served_without_restart_and_watchers_hear_of_them() {
    let repo = repository();
    let addr = serve(ConfigServer::new(DirRepository::open(repo.path()).unwrap())).await;

    let orders_etag = get(addr, "/orders/default").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let inventory_etag = get(addr, "/inventory/default").await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();

    // Nothing changes: the watch answers 304 when its wait is over.
    let unchanged = reqwest::Client::new()
        .get(format!(
            "http://{addr}/_msa/watch/orders/default?wait=200ms"
        ))
        .header("if-none-match", &orders_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"].to_str().unwrap(), orders_etag);

    // A file only inventory reads: inventory's watch answers, the orders watch does not.
    let orders_watch = {
        let etag = orders_etag.clone();
        tokio::spawn(async move { next_version(addr, "orders/default", &etag).await })
    };
    write(repo.path(), "inventory.yml", "stock: 5\n");
    let inventory = next_version(addr, "inventory/default", &inventory_etag).await;
    assert_eq!(inventory.status(), 200);
    let env: Environment = inventory.json().await.unwrap();
    assert_eq!(source_names(&env), ["inventory.yml", "application.yml"]);
    assert!(
        !orders_watch.is_finished(),
        "an unrelated edit does not answer the orders watch"
    );

    // Now edit what orders reads: its watch answers with the new environment.
    write(repo.path(), "orders.yml", "level: orders-edited\n");
    let response = tokio::time::timeout(Duration::from_secs(10), orders_watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["etag"].to_str().unwrap(), orders_etag);
    let env: Environment = response.json().await.unwrap();
    assert_eq!(env.property_sources[0].source["level"], "orders-edited");

    let bad = get(addr, "/_msa/watch/orders/default?wait=soon").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn cipher_values_round_trip_and_bad_ones_are_never_served_as_cipher_text() {
    use msa_config::server::Cipher;

    let repo = repository();
    let keyed = ConfigServer::new(DirRepository::open(repo.path()).unwrap())
        .management(loopback())
        .cipher(Cipher::new(b"test key material, not for production").unwrap());
    let addr = serve(keyed).await;
    let client = reqwest::Client::new();

    let sealed = client
        .post(format!("http://{addr}/encrypt"))
        .body("s3cret-password")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sealed.chars().all(|c| c.is_ascii_hexdigit()), "{sealed}");
    let plain = client
        .post(format!("http://{addr}/decrypt"))
        .body(sealed.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(plain, "s3cret-password");
    let bad = client
        .post(format!("http://{addr}/decrypt"))
        .body("00ff")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let mut tampered = sealed.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    write(
        repo.path(),
        "payments.yml",
        &format!(
            "db:\n  password: '{{cipher}}{sealed}'\n  user: pay\napi:\n  key: '{{cipher}}{tampered}'\n"
        ),
    );
    let fresh = ConfigServer::new(DirRepository::open(repo.path()).unwrap())
        .cipher(Cipher::new(b"test key material, not for production").unwrap());
    let addr = serve(fresh).await;
    let env = environment(addr, "/payments/default").await;
    let source = &env.property_sources[0].source;
    assert_eq!(source["db.password"], "s3cret-password");
    assert_eq!(source["db.user"], "pay");
    assert_eq!(source["invalid.api.key"], "<n/a>");
    assert!(!source.contains_key("api.key"));

    // Without a key: no cipher text leaks, and /encrypt says why it cannot.
    let keyless =
        ConfigServer::new(DirRepository::open(repo.path()).unwrap()).management(loopback());
    let keyless = serve(keyless).await;
    let env = environment(keyless, "/payments/default").await;
    let text = serde_json::to_string(&env).unwrap();
    assert!(!text.contains(&sealed), "cipher text served: {text}");
    assert_eq!(
        env.property_sources[0].source["invalid.db.password"],
        "<n/a>"
    );
    let response = client
        .post(format!("http://{keyless}/encrypt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A script that writes a file and then asks for it gets what it wrote, every time: the
/// kernel's change queue is read before each answer (as Spring's native backend reads
/// the files per request).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_is_served_by_the_next_request() {
    let repo = repository();
    let addr = serve(ConfigServer::new(DirRepository::open(repo.path()).unwrap())).await;
    for n in 0..50 {
        // New files, edits in place, and a file moved into place, as editors and
        // deployment tools write them.
        match n % 3 {
            0 => write(repo.path(), "orders.yml", &format!("level: {n}\n")),
            1 => std::fs::write(repo.path().join("orders.yml"), format!("level: {n}\n")).unwrap(),
            _ => {
                let staged = repo.path().join(".orders.yml.tmp");
                std::fs::write(&staged, format!("level: {n}\n")).unwrap();
                std::fs::rename(&staged, repo.path().join("orders.yml")).unwrap();
            }
        }
        let env = environment(addr, "/orders/default").await;
        assert_eq!(env.property_sources[0].source["level"], n, "write {n}");
    }
    // Files in a directory made after the server started (`teams/shipping` as an
    // application name), then a second write there once the directory is watched.
    for n in 0..2 {
        write(
            repo.path(),
            "teams/shipping.yml",
            &format!("level: shipping-{n}\n"),
        );
        let env = environment(addr, "/teams(_)shipping/default").await;
        assert_eq!(
            env.property_sources[0].source["level"],
            format!("shipping-{n}")
        );
    }
    // A file removed is no longer served.
    std::fs::remove_file(repo.path().join("orders.yml")).unwrap();
    let env = environment(addr, "/orders/default").await;
    assert_ne!(env.property_sources[0].name, "orders.yml");
}
