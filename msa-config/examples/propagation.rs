//! Run with: bench/config-propagation.sh (it builds this in release mode and starts the
//! server).
//!
//! Starts N live clients of one application on a running msa-config-server, then changes
//! the application's file R times; for each change, measures the time from the write until
//! each client holds the new value, and prints p50/p99/max over all clients and rounds.
//!
//! With `--etcd host:port,...` (feature `etcd`) the file is the key
//! `/msa/config/main/bench.yml` in that etcd cluster rather than a file in `--repo`: the
//! clients' `--server` is then an msa-config-server started with `--etcd`, or the
//! cluster itself (`etcd://host:port,...`) for clients that read etcd directly.

use std::time::{Duration, Instant};

use msa_config::client::{ConfigClient, LiveConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Settings {
    value: u64,
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = arg("--server", "http://127.0.0.1:8888");
    let repo = std::path::PathBuf::from(arg("--repo", "."));
    let clients: usize = arg("--clients", "100").parse()?;
    let rounds: u64 = arg("--rounds", "10").parse()?;
    let file = repo.join("bench.yml");
    let etcd = arg("--etcd", "");
    let write = Writer::new(&etcd, file).await?;
    write.value(0).await?;
    // Let the server see the starting file before clients connect.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut live: Vec<LiveConfig<Settings>> = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = ConfigClient::new("bench").uri_list(&server);
        live.push(
            client
                .live(|s| config::Config::builder().add_source(s))
                .await?,
        );
    }
    assert!(
        live.iter().all(|l| l.get().value == 0),
        "every client starts at 0"
    );

    let mut latencies = Vec::with_capacity(clients * rounds as usize);
    for round in 1..=rounds {
        let mut waits = Vec::with_capacity(clients);
        for l in &live {
            let mut rx = l.subscribe();
            waits.push(tokio::spawn(async move {
                while rx.borrow_and_update().value != round {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
                Instant::now()
            }));
        }
        let start = Instant::now();
        write.value(round).await?;
        for wait in waits {
            let seen = tokio::time::timeout(Duration::from_secs(30), wait).await??;
            latencies.push(seen.duration_since(start));
        }
    }
    latencies.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("| clients | changes | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {clients} | {rounds} | {} | {} | {} |",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    Ok(())
}

/// Where the bench's file is written: a file in the repository, or a key in etcd.
enum Writer {
    File(std::path::PathBuf),
    #[cfg(feature = "etcd")]
    Etcd(Box<msa_core::etcd::etcd_client::Client>),
}

impl Writer {
    async fn new(etcd: &str, file: std::path::PathBuf) -> Result<Self, Box<dyn std::error::Error>> {
        if etcd.is_empty() {
            return Ok(Writer::File(file));
        }
        #[cfg(feature = "etcd")]
        return Ok(Writer::Etcd(Box::new(msa_core::etcd::connect(etcd).await?)));
        #[cfg(not(feature = "etcd"))]
        Err("--etcd needs the example built with feature etcd".into())
    }

    async fn value(&self, value: u64) -> Result<(), Box<dyn std::error::Error>> {
        let text = format!("value: {value}\n");
        match self {
            Writer::File(file) => std::fs::write(file, text)?,
            #[cfg(feature = "etcd")]
            Writer::Etcd(client) => {
                client
                    .clone()
                    .put("/msa/config/main/bench.yml", text, None)
                    .await?;
            }
        }
        Ok(())
    }
}
