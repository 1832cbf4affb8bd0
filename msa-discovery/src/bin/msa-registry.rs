//! `msa-registry`: a Eureka-compatible service registry.

use std::process::ExitCode;

use clap::Parser;
use msa_core::shutdown::{self, Shutdown};
use msa_core::telemetry::Telemetry;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};

/// A Eureka-compatible service registry: Spring's Eureka clients and msa's discovery
/// client register, renew and read here.
#[derive(Debug, Parser)]
#[command(name = "msa-registry", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8761")]
    bind: String,
    /// Require `Authorization: Bearer TOKEN` on registrations, heartbeats, cancellations
    /// and status changes; reads stay open.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Evict expired leases even when many lapse at once.
    #[arg(long)]
    no_self_preservation: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    shutdown::exit("msa-registry", run(Args::parse()).await)
}

async fn run(args: Args) -> Result<(), String> {
    let _telemetry = Telemetry::new("msa-registry")
        .version(env!("CARGO_PKG_VERSION"))
        .init()
        .map_err(|e| e.to_string())?;
    if args.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err("--token must not be empty".into());
    }
    let store = Store::new(StoreConfig {
        self_preservation: !args.no_self_preservation,
        ..StoreConfig::default()
    });
    let mut server = RegistryServer::new(store);
    if let Some(token) = args.token {
        server = server.token(&token);
    }
    server.spawn_sweeper();
    tracing::info!(self_preservation = !args.no_self_preservation, "serving");
    Shutdown::new()
        .serve_bind(&args.bind, server.router())
        .await
}
