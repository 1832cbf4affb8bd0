//! `msa::App` configured like a Spring Boot application, over real listeners on 127.0.0.1:
//! profile files and relaxed environment binding, a config server import with profile
//! and label, a Spring `application.yml` with camelCase Resilience4j keys, discovery
//! through the Eureka backend, DNS and a static list, the advertised address, and TLS
//! (an `https://` call trusting a test CA; a server requiring client certificates).

#![cfg(all(feature = "discovery", feature = "config", feature = "breaker"))]

#[cfg(feature = "dns")]
#[path = "support/dnsmasq.rs"]
mod dnsmasq;
#[cfg(feature = "etcd")]
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msa::core::settings::Load;
use registry::{registered, serve_registry};
use serde_json::Value;

/// Settings read from `dir` (and `dir/config`) with exactly this environment.
fn load(dir: &Path, env: &[(&str, &str)]) -> Load {
    Load {
        dirs: vec![dir.to_owned(), dir.join("config")],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        profiles: None,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `url` through `client` until it answers `expected` (discovery takes a moment).
async fn answers(client: &reqwest_middleware::ClientWithMiddleware, url: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let last = match client.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => error.to_string(),
        };
        if last == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {expected:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hello(text: &'static str) -> Router {
    Router::new().route("/hello", get(move || async move { text }))
}

#[tokio::test]
async fn profile_files_and_relaxed_environment_variables_configure_the_app() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        "spring:\n  application:\n    name: orders\n  profiles:\n    active: dev\nserver:\n  address: 127.0.0.1\n  port: 1\norders:\n  max-quantity: 5\n  currency: USD\n---\nspring.config.activate.on-profile: eu\norders.currency: EUR\n",
    );
    write(
        dir.path(),
        "config/application-dev.yml",
        "orders:\n  greeting: hello from dev\n",
    );
    write(
        dir.path(),
        "application-eu.yml",
        "orders:\n  greeting: hello from eu\n",
    );
    let port = free_port();
    let app = msa::App::from_load(load(
        dir.path(),
        &[
            ("SERVER_PORT", &port.to_string()),
            ("ORDERS_MAX_QUANTITY", "12"),
            ("SPRING_PROFILES_ACTIVE", "dev,eu"),
        ],
    ))
    .handle_signals(false);
    assert_eq!(app.name(), "orders");

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Orders {
        max_quantity: u32,
        currency: String,
        greeting: String,
    }
    let settings = app.settings().unwrap();
    assert_eq!(settings.active_profiles(), ["dev", "eu"]);
    let orders: Orders = settings.bind("orders").unwrap();
    assert_eq!(
        orders.max_quantity, 12,
        "ORDERS_MAX_QUANTITY reaches orders.max-quantity"
    );
    assert_eq!(orders.currency, "EUR", "the eu document applies");
    assert_eq!(orders.greeting, "hello from eu", "the last profile wins");

    // SERVER_PORT (environment) wins over server.port (file): the app listens there.
    let running = app.start().await.unwrap();
    assert_eq!(
        running.local_addr(),
        SocketAddr::from(([127, 0, 0, 1], port))
    );
    let info: Value = reqwest::get(format!("http://127.0.0.1:{port}/actuator/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["status"], "UP");
    running.shutdown().await.unwrap();

    // Code wins over the environment.
    let code = msa::App::from_load(load(dir.path(), &[("SERVER_PORT", &port.to_string())]))
        .bind("127.0.0.1:0")
        .handle_signals(false);
    let running = code.start().await.unwrap();
    assert_ne!(running.local_addr().port(), port);
    running.shutdown().await.unwrap();

    // server.address takes a host name too, as Spring's does.
    let by_name = msa::App::new("orders")
        .load(load(&dir.path().join("none"), &[]))
        .bind("localhost:0")
        .management_bind("localhost:0")
        .handle_signals(false)
        .start()
        .await
        .unwrap();
    assert!(by_name.local_addr().ip().is_loopback());
    assert!(by_name.management_addr().unwrap().ip().is_loopback());
    by_name.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_typo_under_msa_fails_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        "server:\n  port: 0\nmsa:\n  discovery:\n    tpye: dns\n",
    );
    let error = msa::App::new("orders")
        .load(load(dir.path(), &[]))
        .handle_signals(false)
        .start()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("application.yml:5: msa.discovery.tpye: unknown field"),
        "{text}"
    );

    // A port that is not a number names the environment variable.
    let error = msa::App::new("orders")
        .load(load(&dir.path().join("none"), &[("SERVER_PORT", "80a")]))
        .handle_signals(false)
        .start()
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("environment variable SERVER_PORT: server.port"),
        "{error}"
    );
}

/// msa-config-server over a directory with `orders.yml` and `orders-dev.yml` (which sets
/// `server.port`); the paths it is asked for are recorded, to see the label sent.
async fn config_server(dir: &Path, port: u16) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let repo = dir.join("config-repo");
    write(&repo, "orders.yml", "orders:\n  currency: GBP\n");
    write(
        &repo,
        "orders-dev.yml",
        &format!("server:\n  port: {port}\norders:\n  greeting: dev\n"),
    );
    let server = msa_config::server::ConfigServer::new(
        msa_config::server::DirRepository::open(&repo).unwrap(),
    );
    let asked = Arc::new(Mutex::new(Vec::new()));
    let recorded = asked.clone();
    let router = server.router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            recorded
                .lock()
                .unwrap()
                .push(request.uri().path().to_owned());
            next.run(request)
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, asked)
}

#[tokio::test]
async fn the_config_server_import_sends_the_active_profiles_and_label() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, asked) = config_server(dir.path(), port).await;
    write(
        dir.path(),
        "application.yml",
        &format!(
            "spring:\n  application:\n    name: orders\n  config:\n    import: \"optional:configserver:http://{server}\"\n  cloud:\n    config:\n      label: release/2.0\nserver:\n  port: 0\norders:\n  currency: USD\n  greeting: local\n"
        ),
    );
    let mut app = msa::App::from_load(load(dir.path(), &[("MSA_PROFILES_ACTIVE", "dev")]))
        .handle_signals(false);

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Orders {
        currency: String,
        greeting: String,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Root {
        orders: Orders,
        server: BTreeMap<String, u16>,
    }
    let live = app.live_config::<Root>().await.unwrap();
    let root = live.get();
    assert_eq!(
        root.orders,
        Orders {
            currency: "GBP".into(),
            greeting: "dev".into()
        },
        "the server's files, the dev profile's over the default, over the local file"
    );
    assert_eq!(root.server["port"], port);
    // Asked for the app, its active profile and the label (`/` in a label is `(_)`).
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == "/orders/dev/release(_)2.0"),
        "{asked:?}"
    );
    // The server's `server.port` (orders-dev.yml) is where the app listens.
    let running = app.start().await.unwrap();
    assert_eq!(running.local_addr().port(), port);
    running.shutdown().await.unwrap();

    // `optional:` lets the app start without the server; without it, start-up fails.
    let down = free_port();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "spring.config.import: configserver:http://127.0.0.1:{down}\nspring.cloud.config.fail-fast: true\nspring.cloud.config.retry:\n  max-attempts: 2\n  initialInterval: 10\nserver.port: 0\n"
        ),
    );
    let app = msa::App::new("orders")
        .load(load(dir.path(), &[]))
        .handle_signals(false);
    // Spring's retry keys: two attempts 10 ms apart, then the start fails.
    let error = tokio::time::timeout(Duration::from_secs(60), app.start())
        .await
        .expect("fail-fast gives up")
        .unwrap_err();
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{down}")),
        "{error}"
    );
}

#[tokio::test]
async fn a_spring_application_yml_with_camel_case_resilience4j_keys_guards_calls() {
    // An upstream that always fails.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let failing = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, failing).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    // As Resilience4j's Spring Boot documentation writes it, with Spring keys msa does
    // not implement beside it.
    write(
        dir.path(),
        "application.yml",
        "spring:\n  application:\n    name: orders\n  jpa:\n    open-in-view: false\nserver:\n  port: 0\n  compression:\n    enabled: true\nresilience4j:\n  circuitbreaker:\n    configs:\n      default:\n        registerHealthIndicator: true\n        slidingWindowSize: 4\n        minimumNumberOfCalls: 4\n        failureRateThreshold: 50\n        waitDurationInOpenState: 1h\n        eventConsumerBufferSize: 10\n        recordExceptions:\n          - org.springframework.web.client.HttpServerErrorException\n    circuitBreakerAspectOrder: 1\n",
    );
    let app = msa::App::from_load(load(dir.path(), &[])).handle_signals(false);
    let client = app.client();
    let running = app.start().await.unwrap();
    let url = format!("http://{upstream}/");
    for _ in 0..4 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 500);
    }
    let refused = client.get(&url).send().await.unwrap_err();
    assert!(
        msa::breaker::middleware::is_circuit_open(&refused),
        "{refused}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn discovery_through_a_eureka_server_with_failover_and_spring_urls() {
    // A Eureka server without msa's watch (as Spring's is), behind a registry URL that is
    // down: registration and discovery both move on to the second.
    let eureka = serve_registry(false).await;
    let down = free_port();
    let zone = format!("http://127.0.0.1:{down}/eureka/,http://{eureka}/eureka/");

    let inventory = msa::App::new("inventory")
        .bind("127.0.0.1:0")
        .registry(zone.clone())
        .handle_signals(false)
        .router(hello("inventory here"))
        .start()
        .await
        .unwrap();
    registered(eureka, "INVENTORY", 1).await;

    // The default backend (msa-registry's watch) finds no watch and follows the delta.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "eureka:\n  client:\n    serviceUrl:\n      defaultZone: {zone}\n    registryFetchIntervalSeconds: 1\n    register-with-eureka: false\n"
        ),
    );
    let caller = msa::App::new("orders").load(load(dir.path(), &[]));
    answers(&caller.client(), "http://inventory/hello", "inventory here").await;

    // The Eureka backend chosen by name reads the same server.
    let eureka_caller =
        msa::App::new("orders").load(load(dir.path(), &[("MSA_DISCOVERY_TYPE", "eureka")]));
    answers(
        &eureka_caller.client(),
        "http://inventory/hello",
        "inventory here",
    )
    .await;
    // Not registered: register-with-eureka is false.
    assert_eq!(registered(eureka, "INVENTORY", 1).await.len(), 1);
    inventory.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_list_from_settings() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(target, hello("found")).await.unwrap() });

    // Spring Cloud's simple discovery client.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "spring:\n  cloud:\n    discovery:\n      client:\n        simple:\n          instances:\n            inventory:\n              - uri: http://127.0.0.1:{port}\n                metadata:\n                  zone: a\n"
        ),
    );
    let app = msa::App::new("orders").load(load(dir.path(), &[]));
    answers(&app.client(), "http://inventory/hello", "found").await;
}

#[cfg(feature = "dns")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_from_settings() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(target, hello("found")).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();

    // DNS: A records of a name, as a Kubernetes headless service has.
    let dns = dnsmasq::Dnsmasq::start("127.0.0.1 inventory.shop.test\n", &[]);
    write(
        dir.path(),
        "application.yml",
        &format!(
            "msa:\n  discovery:\n    type: dns\n    dns:\n      nameservers: [\"127.0.0.1:{}\"]\n      interval: 100ms\n      services:\n        inventory: inventory.shop.test:{port}\n",
            dns.port
        ),
    );
    let app = msa::App::new("orders").load(load(dir.path(), &[]));
    answers(&app.client(), "http://inventory/hello", "found").await;

    // A bad entry is an error naming the key.
    write(
        dir.path(),
        "application.yml",
        "msa.discovery.dns.services.inventory: inventory.shop.test\nmsa.discovery.type: dns\n",
    );
    let app = msa::App::new("orders").load(load(dir.path(), &[]));
    assert!(app.balancer().is_none());
}

/// `msa.discovery.type: etcd`: an app registers itself in etcd (a key under its lease)
/// and another finds it there; a clean stop removes it at once.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_discovery_and_registration_from_settings() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let cluster = etcd::Cluster::start(etcd_dir.path(), 1);
    let settings = |register: bool| {
        format!(
            "msa:\n  discovery:\n    type: etcd\n    etcd:\n      endpoints: etcd://{}\n      prefix: /settings-test\n      lease: 3s\n      register: {register}\n",
            cluster.endpoints()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "application.yml", &settings(true));
    let inventory = msa::App::new("inventory")
        .load(load(dir.path(), &[]))
        .bind("127.0.0.1:0")
        .handle_signals(false)
        .router(hello("inventory on etcd"))
        .start()
        .await
        .unwrap();
    let callers = tempfile::tempdir().unwrap();
    write(callers.path(), "application.yml", &settings(false));
    let orders = msa::App::new("orders").load(load(callers.path(), &[]));
    answers(
        &orders.client(),
        "http://inventory/hello",
        "inventory on etcd",
    )
    .await;

    // Only inventory registered (orders says register: false), under the prefix.
    let client = msa::core::etcd::connect(&cluster.endpoints())
        .await
        .unwrap();
    let discovery = msa::discovery::etcd::EtcdDiscovery::with_prefix(client, "/settings-test");
    let mut catalog = discovery.catalog();
    let listed = catalog
        .wait_for(|c| !c.is_empty())
        .await
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(listed, ["inventory"]);
    inventory.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), catalog.wait_for(|c| c.is_empty()))
        .await
        .expect("deregistered at once")
        .unwrap();

    // Without endpoints: an error naming the key.
    write(dir.path(), "application.yml", "msa.discovery.type: etcd\n");
    let app = msa::App::new("orders").load(load(dir.path(), &[]));
    assert!(app.balancer().is_none());
}

/// `spring.config.import: configserver:etcd://...`: the app reads its config files from
/// etcd itself (profile over application over shared), and a change put in etcd reaches
/// its live settings.
#[cfg(all(feature = "etcd", feature = "config"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_read_from_etcd_directly_from_settings() {
    let etcd_dir = tempfile::tempdir().unwrap();
    let cluster = etcd::Cluster::start(etcd_dir.path(), 1);
    let mut client = msa::core::etcd::connect(&cluster.endpoints())
        .await
        .unwrap();
    for (key, text) in [
        (
            "/shop/config/main/application.yml",
            "orders:\n  currency: EUR\n  max: 1\n",
        ),
        ("/shop/config/main/orders.yml", "orders:\n  max: 5\n"),
        (
            "/shop/config/main/orders-dev.yml",
            "orders:\n  currency: GBP\n",
        ),
    ] {
        client.put(key, text, None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "spring.config.import: \"configserver:etcd://{}/shop\"\n",
            cluster.endpoints()
        ),
    );
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Orders {
        currency: String,
        max: u32,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Root {
        orders: Orders,
    }
    let mut app = msa::App::new("orders")
        .load(load(dir.path(), &[("MSA_PROFILES_ACTIVE", "dev")]))
        .handle_signals(false);
    let live = app.live_config::<Root>().await.unwrap();
    assert_eq!(
        live.get().orders,
        Orders {
            currency: "GBP".into(),
            max: 5
        }
    );
    let mut following = live.subscribe();
    client
        .put("/shop/config/main/orders.yml", "orders:\n  max: 6\n", None)
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        following.wait_for(|root| root.orders.max == 6),
    )
    .await
    .expect("the change reaches the app")
    .unwrap();
}

#[tokio::test]
async fn the_advertised_address_is_an_interface_address_or_the_configured_one() {
    let registry = serve_registry(true).await;
    let expected = if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .filter(|i| {
            !i.is_loopback() && i.ip().is_ipv4() && !i.ip().to_string().starts_with("169.254")
        })
        .min_by_key(|i| i.index.unwrap_or(u32::MAX))
        .map(|i| i.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned());

    // Bound to every interface: the first non-loopback address, not 127.0.0.1.
    let everywhere = msa::App::new("wide")
        .bind("0.0.0.0:0")
        .registry(format!("http://{registry}"))
        .handle_signals(false)
        .start()
        .await
        .unwrap();
    let listed = registered(registry, "WIDE", 1).await;
    assert_eq!(listed[0]["hostName"], expected.as_str());
    everywhere.shutdown().await.unwrap();

    // prefer-ip-address with an ip-address, and a hostname from the environment.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "eureka:\n  client:\n    service-url:\n      defaultZone: http://{registry}/eureka/\n  instance:\n    prefer-ip-address: true\n    ip-address: 10.9.8.7\nserver.port: 0\n"
        ),
    );
    let by_ip = msa::App::new("byip")
        .load(load(dir.path(), &[]))
        .handle_signals(false)
        .start()
        .await
        .unwrap();
    assert_eq!(
        registered(registry, "BYIP", 1).await[0]["hostName"],
        "10.9.8.7"
    );
    by_ip.shutdown().await.unwrap();
    let by_name = msa::App::new("byname")
        .load(load(
            dir.path(),
            &[
                ("EUREKA_INSTANCE_PREFER_IP_ADDRESS", "false"),
                ("EUREKA_INSTANCE_HOSTNAME", "byname.internal"),
            ],
        ))
        .handle_signals(false)
        .start()
        .await
        .unwrap();
    assert_eq!(
        registered(registry, "BYNAME", 1).await[0]["hostName"],
        "byname.internal"
    );
    by_name.shutdown().await.unwrap();
}

/// An app serving `/who` over TLS as `application.yml` says, with `extra` settings.
async fn tls_server(ca: &tls::TestCa, extra: &str) -> msa::Running {
    let dir = ca.dir.path().join(format!("server-{}", fastrand::u32(..)));
    write(
        &dir,
        "application.yml",
        &format!(
            "server:\n  port: 0\n  ssl:\n    certificate: {}\n    certificate-private-key: {}\n{extra}",
            ca.server_certificate.display(),
            ca.server_key.display()
        ),
    );
    let who = Router::new().route(
        "/who",
        get(|request: axum::extract::Request| async move {
            match request
                .extensions()
                .get::<msa::core::listener::PeerCertificates>()
            {
                Some(_) => "a client with a certificate",
                None => "anonymous",
            }
        }),
    );
    msa::App::new("secure")
        .load(load(&dir, &[]))
        .router(who)
        .handle_signals(false)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_https_call_trusting_a_test_ca() {
    let ca = tls::TestCa::new();
    let server = tls_server(&ca, "").await;
    let url = format!("https://localhost:{}/who", server.local_addr().port());

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "application.yml",
        &format!(
            "msa:\n  client:\n    ssl:\n      trust-certificate: [{}]\n",
            ca.ca.display()
        ),
    );
    let trusting = msa::App::new("caller").load(load(dir.path(), &[]));
    let response = trusting.client().get(&url).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "anonymous");

    // Without the CA, the certificate is refused.
    let plain = msa::App::new("caller").load(load(&dir.path().join("none"), &[]));
    assert!(plain.client().get(&url).send().await.is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_tls_requiring_a_client_certificate() {
    let ca = tls::TestCa::new();
    let server = tls_server(
        &ca,
        &format!(
            "    client-auth: need\n    trust-certificate: {}\n",
            ca.ca.display()
        ),
    )
    .await;
    let url = format!("https://localhost:{}/who", server.local_addr().port());

    let with_certificate = msa::App::new("caller").client_tls(
        msa::core::tls::ClientTls::default()
            .trust_certificate(&ca.ca)
            .identity(&ca.client_certificate, &ca.client_key),
    );
    let response = with_certificate.client().get(&url).send().await.unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "a client with a certificate"
    );

    let without = msa::App::new("caller")
        .client_tls(msa::core::tls::ClientTls::default().trust_certificate(&ca.ca));
    assert!(without.client().get(&url).send().await.is_err());

    // A client-auth setting without a CA to check against fails the start, naming it.
    let dir = ca.dir.path().join("bad");
    write(
        &dir,
        "application.yml",
        &format!(
            "server:\n  port: 0\n  ssl:\n    certificate: {}\n    certificate-private-key: {}\n    client-auth: need\n",
            ca.server_certificate.display(),
            ca.server_key.display()
        ),
    );
    let error = msa::App::new("bad")
        .load(load(&dir, &[]))
        .handle_signals(false)
        .start()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("server.ssl.trust-certificate"),
        "{error}"
    );
    server.shutdown().await.unwrap();
}
