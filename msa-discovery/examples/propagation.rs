//! Run with: bench/propagation.sh (it builds this in release mode and starts msa-registry).
//!
//! N clients, each with its own `RegistryDiscovery` (its own long-poll), watch a service
//! (on `--watch`'s registries in turn: replicas sharing an etcd store, say).
//! Each round an instance registers, every client sees it, then it leaves, and the time
//! until each client's balancer can no longer choose it is measured:
//!
//! - `deregister`: the instance cancels its lease (a graceful shutdown);
//! - `kill`: the instance stops renewing (a crash); it goes when its lease (declared by the
//!   instance, `--lease`) expires and the registry's sweep (every second) evicts it.

use std::time::{Duration, Instant};

use msa_core::ServiceInstance;
use msa_discovery::balance::{Balancer, BalancerConfig};
use msa_discovery::discovery::{Discovery, RegistryDiscovery};
use msa_discovery::registration::Registration;

#[path = "support/mod.rs"]
mod support;
use support::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = arg("--registry", "http://127.0.0.1:8761");
    // The registries the clients watch, in turn (replicas sharing one store): by default
    // the one instances register with.
    let watched = arg("--watch", &registry);
    let watched: Vec<&str> = watched.split(',').collect();
    let clients: usize = arg("--clients", "100").parse()?;
    let rounds: usize = arg("--rounds", "10").parse()?;
    let lease = Duration::from_secs(arg("--lease", "3").parse()?);
    let eureka = format!("{registry}/eureka");

    // A steady instance, so the service always has somewhere to go.
    Registration::new(
        &eureka,
        ServiceInstance::new("bench", "127.0.0.1", 1).with_id("steady"),
    )
    .timings(Duration::from_secs(1800), Duration::from_secs(3600))
    .register()
    .await?;
    let watchers: Vec<(RegistryDiscovery, Balancer)> = (0..clients)
        .map(|n| {
            let discovery = RegistryDiscovery::new(watched[n % watched.len()]);
            let balancer = Balancer::new(discovery.clone(), BalancerConfig::default());
            (discovery, balancer)
        })
        .collect();

    println!("| event | clients | rounds | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for mode in ["deregister", "kill"] {
        let mut latencies = Vec::with_capacity(clients * rounds);
        for round in 0..rounds {
            let id = format!("{mode}-{round}");
            let victim = Registration::new(
                &eureka,
                ServiceInstance::new("bench", "127.0.0.1", 2).with_id(&id),
            )
            .timings(lease / 3, lease);
            victim.register().await?;
            // Every client sees it first.
            for (discovery, _) in &watchers {
                let mut rx = discovery.watch("bench");
                while !rx.borrow_and_update().iter().any(|i| i.id == id) {
                    tokio::time::timeout(Duration::from_secs(30), rx.changed()).await??;
                }
            }
            let waits: Vec<_> = watchers
                .iter()
                .map(|(discovery, balancer)| {
                    let mut rx = discovery.watch("bench");
                    let balancer = balancer.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        loop {
                            rx.borrow_and_update();
                            // Gone once no pick (sticky to its id) can return it.
                            let pick = balancer.pick("bench", Some(&id)).expect("steady is UP");
                            if pick.instance().id != id {
                                return Instant::now();
                            }
                            drop(pick);
                            if rx.changed().await.is_err() {
                                return Instant::now();
                            }
                        }
                    })
                })
                .collect();
            let start = Instant::now();
            if mode == "deregister" {
                victim.deregister().await?;
            } // "kill": it simply never renews.
            for wait in waits {
                let gone = tokio::time::timeout(lease + Duration::from_secs(30), wait).await??;
                latencies.push(gone.duration_since(start));
            }
        }
        latencies.sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let event = if mode == "kill" {
            format!("killed (lease {lease:?})")
        } else {
            "deregistered".to_owned()
        };
        println!(
            "| {event} | {clients} | {rounds} | {} | {} | {} |",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        );
    }
    Ok(())
}
