//! Discovery and balancing over real HTTP: services register with the msa-registry
//! binary, a caller finds them through the native watch and calls them through the load
//! balancer (hyper-util and reqwest), across status overrides, dead instances, lease
//! expiry and a registry restart.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use msa_core::shutdown::Shutdown;
use msa_core::{InstanceStatus, ServiceInstance};
use msa_discovery::balance::{
    Balancer, BalancerConfig, LoadBalancerLayer, LoadBalancerMiddleware, Strategy,
};
use msa_discovery::discovery::{Discovery, RegistryDiscovery};
use msa_discovery::registration::Registration;
use tower::{Service, ServiceBuilder, ServiceExt};

mod common;
use common::{Registry, free_port, wait_for};

const HEARTBEAT: Duration = Duration::from_secs(1);

/// One running instance of "inventory": answers its id at /whoami and echoes /echo.
struct Instance {
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Instance {
    async fn start(registry: u16, id: &str, token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = id.to_owned();
        let app = Router::new()
            .route("/whoami", get(move || async move { me }))
            .route("/echo", post(|body: Bytes| async move { body }));
        let shutdown = Shutdown::new();
        let mut registration = Registration::new(
            format!("http://127.0.0.1:{registry}/eureka"),
            ServiceInstance::new("inventory", "127.0.0.1", port).with_id(id),
        )
        .timings(HEARTBEAT, Duration::from_secs(5));
        if let Some(token) = token {
            registration = registration.token(token);
        }
        registration.start(&shutdown);
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.serve(listener, app).await }
        });
        Instance { shutdown, server }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.server.await.unwrap().unwrap();
    }
}

/// Waits until discovery lists `inventory` with these ids UP, in any order.
async fn until_up(discovery: &RegistryDiscovery, ids: &[&str]) {
    let mut watch = discovery.watch("inventory");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut up: Vec<String> = watch
            .borrow_and_update()
            .iter()
            .filter(|i| i.status == InstanceStatus::Up)
            .map(|i| i.id.clone())
            .collect();
        up.sort();
        if up == ids {
            return;
        }
        tokio::time::timeout_at(deadline, watch.changed())
            .await
            .unwrap_or_else(|_| panic!("inventory never had exactly {ids:?} UP; last {up:?}"))
            .unwrap();
    }
}

type HyperBalanced = msa_discovery::balance::LoadBalancer<
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
>;

fn hyper_client(balancer: &Balancer) -> HyperBalanced {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    ServiceBuilder::new()
        .layer(LoadBalancerLayer::new(balancer.clone()))
        .service(client)
}

async fn call(client: &mut HyperBalanced, method: &str, path: &str, body: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://inventory{path}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn whoami_tally(client: &mut HyperBalanced, n: usize) -> HashMap<String, usize> {
    let mut tally = HashMap::new();
    for _ in 0..n {
        let (status, id) = call(client, "GET", "/whoami", "").await;
        assert_eq!(status, 200);
        *tally.entry(id).or_default() += 1;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_and_another_calls_it_through_the_balancer() {
    let port = free_port();
    let _registry = Registry::start(port);
    let one = Instance::start(port, "inventory-1", None).await;
    let two = Instance::start(port, "inventory-2", None).await;

    let discovery = RegistryDiscovery::new(format!("http://127.0.0.1:{port}"));
    until_up(&discovery, &["inventory-1", "inventory-2"]).await;
    let balancer = Balancer::new(
        discovery.clone(),
        BalancerConfig::default().with_strategy(Strategy::RoundRobin),
    );

    // hyper-util, both instances in turn.
    let mut client = hyper_client(&balancer);
    let tally = whoami_tally(&mut client, 10).await;
    assert_eq!(
        tally,
        HashMap::from([("inventory-1".into(), 5), ("inventory-2".into(), 5)])
    );

    // reqwest through reqwest-middleware.
    let reqwest = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(LoadBalancerMiddleware::new(balancer.clone()))
        .build();
    let answer = reqwest
        .post("http://inventory/echo")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "hello");

    // An operator takes inventory-1 out of service: the balancer stops choosing it as
    // soon as the watch says so...
    let admin = reqwest::Client::new();
    let status_url = format!(
        "http://127.0.0.1:{port}/eureka/apps/INVENTORY/inventory-1/status?value=OUT_OF_SERVICE"
    );
    assert_eq!(admin.put(&status_url).send().await.unwrap().status(), 200);
    until_up(&discovery, &["inventory-2"]).await;
    let tally = whoami_tally(&mut client, 6).await;
    assert_eq!(tally, HashMap::from([("inventory-2".into(), 6)]));
    // ...and the override holds across heartbeats, until it is removed.
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert_eq!(whoami_tally(&mut client, 4).await.len(), 1);
    assert_eq!(
        admin.delete(&status_url).send().await.unwrap().status(),
        200
    );
    until_up(&discovery, &["inventory-1", "inventory-2"]).await;
    assert_eq!(whoami_tally(&mut client, 4).await.len(), 2);

    // An instance that registered and died: connections to it are refused, and every
    // request (a POST too) goes to another instance with its body intact.
    Registration::new(
        format!("http://127.0.0.1:{port}/eureka"),
        ServiceInstance::new("inventory", "127.0.0.1", free_port()).with_id("inventory-3"),
    )
    .register()
    .await
    .unwrap();
    until_up(&discovery, &["inventory-1", "inventory-2", "inventory-3"]).await;
    for n in 0..12 {
        let (status, body) = call(&mut client, "POST", "/echo", &format!("order {n}")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("order {n}").as_str())
        );
    }
    let answer = reqwest.get("http://inventory/whoami").send().await.unwrap();
    assert_eq!(answer.status(), 200);

    // Shutdown deregisters: the caller stops choosing the instance.
    one.stop().await;
    until_up(&discovery, &["inventory-2", "inventory-3"]).await;
    let tally = whoami_tally(&mut client, 6).await;
    assert_eq!(tally, HashMap::from([("inventory-2".into(), 6)]));
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_keep_working_through_a_registry_restart_and_instances_return_within_a_heartbeat() {
    let port = free_port();
    let token = "s3cret";
    let registry = Registry::start_with(port, &["--token", token]);
    let instance = Instance::start(port, "inventory-1", Some(token)).await;
    let discovery = RegistryDiscovery::new(format!("http://127.0.0.1:{port}"));
    until_up(&discovery, &["inventory-1"]).await;
    let balancer = Balancer::new(discovery.clone(), BalancerConfig::default());
    let mut client = hyper_client(&balancer);

    // Writes need the token.
    let anonymous = Registration::new(
        format!("http://127.0.0.1:{port}/eureka"),
        ServiceInstance::new("inventory", "127.0.0.1", 9).with_id("intruder"),
    );
    let error = anonymous.register().await.unwrap_err().to_string();
    assert!(error.contains("401"), "{error}");

    // The registry goes away: calls go on from the last known list.
    drop(registry);
    for _ in 0..3 {
        assert_eq!(
            call(&mut client, "GET", "/whoami", "").await.1,
            "inventory-1"
        );
    }

    // It comes back knowing nothing; calls still go on, and the instance registers
    // again within one heartbeat of the registry listening.
    let _registry = Registry::start_with(port, &["--token", token]);
    while reqwest::get(format!("http://127.0.0.1:{port}/actuator/health"))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listening = tokio::time::Instant::now();
    assert_eq!(
        call(&mut client, "GET", "/whoami", "").await.1,
        "inventory-1"
    );
    wait_for(port, "inventory", 1).await;
    let back = listening.elapsed();
    assert!(
        back <= HEARTBEAT + Duration::from_millis(500),
        "re-registered after {back:?}"
    );
    assert_eq!(
        call(&mut client, "GET", "/whoami", "").await.1,
        "inventory-1"
    );
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_is_not_renewed_expires() {
    let port = free_port();
    let _registry = Registry::start(port);
    let registered = tokio::time::Instant::now();
    // Registered with a one-second lease, never renewed.
    loop {
        let attempt = Registration::new(
            format!("http://127.0.0.1:{port}/eureka"),
            ServiceInstance::new("inventory", "127.0.0.1", 9).with_id("inventory-9"),
        )
        .timings(Duration::from_millis(500), Duration::from_secs(1))
        .register()
        .await;
        match attempt {
            Ok(()) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    wait_for(port, "inventory", 1).await;
    wait_for(port, "inventory", 0).await;
    let lived = registered.elapsed();
    // Expiry at last renewal + 1 s; the sweep runs every second.
    assert!(lived >= Duration::from_secs(1), "evicted after {lived:?}");
    assert!(lived < Duration::from_secs(4), "evicted after {lived:?}");
}
