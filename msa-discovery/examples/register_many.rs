//! Used by bench/registry-heartbeats.sh: registers `--count` instances of the application
//! `BENCH` (ids `bench-0`...) on a running msa-registry, 32 at a time.

use std::time::Duration;

use msa_core::ServiceInstance;
use msa_discovery::registration::Registration;

#[path = "support/mod.rs"]
mod support;
use support::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let eureka = format!("{}/eureka", arg("--registry", "http://127.0.0.1:8761"));
    let count: usize = arg("--count", "10000").parse()?;
    let mut next = 0;
    let started = std::time::Instant::now();
    while next < count {
        let batch: Vec<_> = (next..count.min(next + 32))
            .map(|n| {
                let instance = ServiceInstance::new("bench", "10.0.0.1", 1 + (n % 60000) as u16)
                    .with_id(format!("bench-{n}"));
                // Long leases: the load renews them, but nothing should lapse mid-run.
                let registration = Registration::new(&eureka, instance)
                    .timings(Duration::from_secs(30), Duration::from_secs(300));
                tokio::spawn(async move { registration.register().await })
            })
            .collect();
        for task in batch {
            task.await??;
        }
        next += 32;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "registered {count} instances in {seconds:.2} s: {:.0} registrations/s",
        count as f64 / seconds
    );
    Ok(())
}
