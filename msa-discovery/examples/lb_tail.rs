//! Run with: bench/lb-tail.sh (it builds this in release mode).
//!
//! The linkerd "Beyond Round Robin" experiment, scaled down: 10 upstreams answer after
//! ~2 ms; for the second half of each run one of them answers after ~20 ms (10× slower).
//! An open-loop load (a fixed request rate, so slow answers do not slow the sender) goes
//! through the load balancer, and every request's latency is recorded. Runs, alternated
//! and repeated: round robin and P2C-EWMA with the slow phase, and all-healthy baselines.
//! `--decay-ms N` overrides P2C-EWMA's decay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use msa_core::ServiceInstance;
use msa_discovery::balance::{Balancer, BalancerConfig, LoadBalancerLayer, Strategy};
use msa_discovery::discovery::StaticDiscovery;
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;
use support::*;

async fn upstream(slow: Arc<AtomicBool>, base: Duration) -> SocketAddr {
    let app = Router::new().route(
        "/",
        get(move || {
            let slow = slow.load(Ordering::Relaxed);
            async move {
                tokio::time::sleep(if slow { base * 10 } else { base }).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Run {
    name: &'static str,
    strategy: Strategy,
    degrade: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstreams: usize = arg("--upstreams", "10").parse()?;
    let rate: u64 = arg("--rate", "1000").parse()?;
    let seconds: u64 = arg("--seconds", "20").parse()?;
    let rounds: usize = arg("--rounds", "2").parse()?;
    let base = Duration::from_millis(2);

    let slow = Arc::new(AtomicBool::new(false));
    let mut instances = Vec::new();
    for n in 0..upstreams {
        let flag = if n == 0 {
            slow.clone()
        } else {
            Arc::new(AtomicBool::new(false))
        };
        let addr = upstream(flag, base).await;
        instances.push(
            ServiceInstance::new("upstream", addr.ip().to_string(), addr.port())
                .with_id(format!("upstream-{n}")),
        );
    }
    let runs = [
        Run {
            name: "round robin, one slow",
            strategy: Strategy::RoundRobin,
            degrade: true,
        },
        Run {
            name: "P2C-EWMA, one slow",
            strategy: Strategy::P2cEwma,
            degrade: true,
        },
        Run {
            name: "round robin, all healthy",
            strategy: Strategy::RoundRobin,
            degrade: false,
        },
        Run {
            name: "P2C-EWMA, all healthy",
            strategy: Strategy::P2cEwma,
            degrade: false,
        },
    ];
    let mut results: Vec<Vec<Duration>> = vec![Vec::new(); runs.len()];
    let mut errors = vec![0usize; runs.len()];
    for _ in 0..rounds {
        for (index, run) in runs.iter().enumerate() {
            let balancer = Balancer::new(StaticDiscovery::new(instances.clone()), {
                let mut config = BalancerConfig::default().with_strategy(run.strategy);
                if let Ok(ms) = arg("--decay-ms", "").parse::<u64>() {
                    config.decay = Duration::from_millis(ms);
                }
                config
            });
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build_http::<Full<Bytes>>();
            let service = ServiceBuilder::new()
                .layer(LoadBalancerLayer::new(balancer))
                .service(client);
            slow.store(false, Ordering::Relaxed);
            let total = rate * seconds;
            let interval = Duration::from_nanos(1_000_000_000 / rate);
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::with_capacity(total as usize);
            for n in 0..total {
                let due = start + interval * n as u32;
                tokio::time::sleep_until(due).await;
                if run.degrade && n == total / 2 {
                    slow.store(true, Ordering::Relaxed);
                }
                let mut service = service.clone();
                tasks.push(tokio::spawn(async move {
                    let request = http::Request::get("http://upstream/")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    // Latency from when the request was due: queueing in the sender counts.
                    let due = due.into_std();
                    let answer = service.ready().await?.call(request).await?;
                    answer.into_body().collect().await?;
                    Ok::<Duration, msa_core::BoxError>(Instant::now().duration_since(due))
                }));
            }
            for task in tasks {
                match task.await? {
                    Ok(latency) => results[index].push(latency),
                    Err(_) => errors[index] += 1,
                }
            }
            slow.store(false, Ordering::Relaxed);
        }
    }
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("| run | requests | errors | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (index, run) in runs.iter().enumerate() {
        let latencies = &mut results[index];
        latencies.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.name,
            latencies.len(),
            errors[index],
            ms(percentile(latencies, 0.50)),
            ms(percentile(latencies, 0.99)),
            ms(percentile(latencies, 0.999)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        );
    }
    Ok(())
}
