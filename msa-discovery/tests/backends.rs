//! The Eureka-protocol and DNS discovery backends against real servers: the msa-registry
//! binary (speaking Eureka's REST API), and dnsmasq serving A and SRV records.

use std::net::{IpAddr, Ipv4Addr};

use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use msa_core::shutdown::Shutdown;
use msa_core::{InstanceStatus, ServiceInstance};
use msa_discovery::discovery::{
    Catalog, Discovery, DnsDiscovery, DnsQuery, EurekaDiscovery, Instances, RegistryDiscovery,
};
use msa_discovery::registration::Registration;
use tokio::sync::watch;

mod common;
use common::{Registry, free_port};

/// Waits until the list satisfies `done`.
async fn until(rx: &mut watch::Receiver<Instances>, what: &str, done: impl Fn(&Instances) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&rx.borrow_and_update()) {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap_or_else(|_| panic!("never: {what}; last {:?}", rx.borrow()))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_discovery_follows_the_delta() {
    let port = free_port();
    let _registry = Registry::start(port);
    let base = format!("http://127.0.0.1:{port}/eureka");
    let shutdown = Shutdown::new();
    let _registration = Registration::new(
        base.clone(),
        ServiceInstance::new("inventory", "127.0.0.1", 7001).with_id("inventory-1"),
    )
    .timings(Duration::from_millis(200), Duration::from_secs(3))
    .start(&shutdown);

    let eureka = EurekaDiscovery::new(base).interval(Duration::from_millis(100));
    let mut inventory = eureka.watch("INVENTORY");
    until(&mut inventory, "inventory-1 listed", |list| {
        list.len() == 1 && list[0].id == "inventory-1" && list[0].port == 7001
    })
    .await;

    // A second instance arrives through the delta, then a status override.
    Registration::new(
        format!("http://127.0.0.1:{port}/eureka"),
        ServiceInstance::new("inventory", "127.0.0.1", 7002).with_id("inventory-2"),
    )
    .register()
    .await
    .unwrap();
    until(&mut inventory, "two instances", |list| list.len() == 2).await;
    let url = format!(
        "http://127.0.0.1:{port}/eureka/apps/INVENTORY/inventory-1/status?value=OUT_OF_SERVICE"
    );
    assert_eq!(
        reqwest::Client::new()
            .put(url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    until(&mut inventory, "inventory-1 out of service", |list| {
        list.iter()
            .any(|i| i.id == "inventory-1" && i.status == InstanceStatus::OutOfService)
    })
    .await;

    // A cancellation removes it; other services stay empty.
    let url = format!("http://127.0.0.1:{port}/eureka/apps/INVENTORY/inventory-2");
    assert_eq!(
        reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    until(&mut inventory, "inventory-2 gone", |list| list.len() == 1).await;
    assert!(eureka.instances("payments").is_empty());
}

/// Waits until the catalog satisfies `done`.
async fn until_catalog(
    rx: &mut watch::Receiver<Catalog>,
    what: &str,
    done: impl Fn(&Catalog) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&rx.borrow_and_update()) {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap_or_else(|_| panic!("never: {what}; last {:?}", rx.borrow()))
            .unwrap();
    }
}

fn ids(catalog: &Catalog) -> Vec<(String, Vec<String>)> {
    catalog
        .iter()
        .map(|(service, list)| (service.clone(), list.iter().map(|i| i.id.clone()).collect()))
        .collect()
}

/// The whole registry, followed through msa-registry's watch and through the Eureka delta
/// (what a Spring Eureka server offers): both see services come, change and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_follows_every_service() {
    let port = free_port();
    let _registry = Registry::start(port);
    let base = format!("http://127.0.0.1:{port}/eureka");
    let native = RegistryDiscovery::new(&base);
    let eureka = EurekaDiscovery::new(&base).interval(Duration::from_millis(100));
    let mut followers = [native.catalog(), eureka.catalog()];
    for (name, port) in [("orders", 7001), ("payments", 7002)] {
        Registration::new(
            base.clone(),
            ServiceInstance::new(name, "127.0.0.1", port).with_id(format!("{name}-1")),
        )
        .register()
        .await
        .unwrap();
    }
    for catalog in &mut followers {
        until_catalog(catalog, "both services", |c| {
            ids(c)
                == [
                    ("orders".to_owned(), vec!["orders-1".to_owned()]),
                    ("payments".to_owned(), vec!["payments-1".to_owned()]),
                ]
        })
        .await;
    }
    let http = reqwest::Client::new();
    let status = http
        .put(format!(
            "{base}/apps/PAYMENTS/payments-1/status?value=OUT_OF_SERVICE"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    for catalog in &mut followers {
        until_catalog(catalog, "payments out of service", |c| {
            c["payments"][0].status == InstanceStatus::OutOfService
        })
        .await;
    }
    let cancel = http
        .delete(format!("{base}/apps/ORDERS/orders-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    for catalog in &mut followers {
        until_catalog(catalog, "orders gone", |c| {
            !c.contains_key("orders") && c.contains_key("payments")
        })
        .await;
    }
}

#[path = "../../tests/support/dnsmasq.rs"]
mod dnsmasq;
use dnsmasq::Dnsmasq;

/// A resolver that asks `dns` only.
fn resolver(dns: &Dnsmasq) -> hickory_resolver::TokioResolver {
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port;
    let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, vec![udp]);
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_reads_address_and_srv_records() {
    let dns = Dnsmasq::start(
        "127.0.0.1 orders.test\n127.0.0.2 orders.test\n",
        &[
            "_http._tcp.payments.test,pay-1.test,8081,0,10",
            "_http._tcp.payments.test,pay-2.test,8082,0,30",
            "_http._tcp.payments.test,pay-backup.test,9000,1,10",
        ],
    );
    let discovery = DnsDiscovery::with_resolver(resolver(&dns))
        .service("orders", DnsQuery::address("orders.test.", 8080))
        .service("payments", DnsQuery::srv("_http._tcp.payments.test."))
        .interval(Duration::from_millis(100));

    let mut orders = discovery.watch("orders");
    until(&mut orders, "two addresses", |list| list.len() == 2).await;
    let hosts: Vec<String> = orders.borrow().iter().map(|i| i.authority()).collect();
    assert_eq!(hosts, ["127.0.0.1:8080", "127.0.0.2:8080"]);

    // SRV: the best priority only, with weights; the backup is left out.
    let mut payments = discovery.watch("payments");
    until(&mut payments, "two SRV targets", |list| list.len() == 2).await;
    let targets: Vec<(String, u32)> = payments
        .borrow()
        .iter()
        .map(|i| (i.authority(), i.weight))
        .collect();
    assert_eq!(
        targets,
        [
            ("pay-1.test:8081".into(), 10),
            ("pay-2.test:8082".into(), 30)
        ]
    );

    // A scale-down shows at the next resolution.
    dns.set_hosts("127.0.0.2 orders.test\n");
    until(&mut orders, "one address", |list| {
        list.len() == 1 && list[0].host == "127.0.0.2"
    })
    .await;

    // Scaled to zero: a name without records is a service without instances (not a
    // failed lookup, which would keep the last list).
    dns.set_hosts("");
    until(&mut orders, "no addresses", |list| list.is_empty()).await;
    assert!(discovery.instances("unconfigured").is_empty());
}
