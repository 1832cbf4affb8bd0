//! `msa-registry`: a Eureka-compatible service registry.

use std::process::ExitCode;

use clap::Parser;
use msa_core::cli::ServerArgs;
use msa_core::shutdown;
use msa_core::telemetry::Telemetry;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};

/// The environment variable the registry's token may come from.
const TOKEN_ENV: &str = "MSA_REGISTRY_TOKEN";

/// A Eureka-compatible service registry: Spring's Eureka clients and msa's discovery
/// client register, renew and read here.
#[derive(Debug, Parser)]
#[command(name = "msa-registry", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8761")]
    bind: String,
    /// Require `Authorization: Bearer TOKEN` (or HTTP Basic with TOKEN as the password) on
    /// registrations, heartbeats, cancellations and status changes; reads stay open. Better
    /// kept out of the command line: --token-file or MSA_REGISTRY_TOKEN.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the token from this file (trimmed).
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
    /// Where instances are kept: `memory` (this process), or `etcd://host:port[,...]` (an
    /// etcd cluster, shared by any number of registry replicas; leases expire in etcd).
    #[arg(long, value_name = "STORE", default_value = "memory")]
    store: String,
    /// The key prefix in etcd (`<prefix>/registry/<APP>/<id>`).
    #[arg(long, value_name = "PREFIX", default_value = "/msa")]
    etcd_prefix: String,
    /// Evict expired leases even when many lapse at once.
    #[arg(long)]
    no_self_preservation: bool,
    /// The longest lease (and renewal interval) an instance gets, whatever it declares.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = msa_core::duration::parse)]
    max_lease: std::time::Duration,
    /// The most instances held; past it, a new registration is refused (400).
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    max_instances: usize,
    /// The most bytes of metadata (keys and values) one instance may carry.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    max_metadata_bytes: usize,
    /// The longest instance id, application name, host name or address.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    max_field_bytes: usize,
    #[command(flatten)]
    server: ServerArgs,
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
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("--token-file {}: {e}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => std::env::var(TOKEN_ENV).ok(),
    };
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(
            "the registry token (--token, --token-file or MSA_REGISTRY_TOKEN) must not be empty"
                .into(),
        );
    }
    let store = Store::new(StoreConfig {
        self_preservation: !args.no_self_preservation,
        max_lease: args.max_lease,
        max_instances: args.max_instances,
        max_metadata_bytes: args.max_metadata_bytes,
        max_field_bytes: args.max_field_bytes,
        ..StoreConfig::default()
    });
    let mut server = RegistryServer::new(store);
    if let Some(token) = token {
        server = server.token(&token);
    }
    match args.store.as_str() {
        "memory" => server.spawn_sweeper(),
        url if url.starts_with("etcd://") => server = with_etcd(server, url, &args.etcd_prefix)?,
        other => {
            return Err(format!(
                "--store {}: memory or etcd://host:port[,host:port...]",
                msa_core::secrets::mask_url(other)
            ));
        }
    }
    tracing::info!(self_preservation = !args.no_self_preservation, "serving");
    let availability = server.availability();
    args.server
        .serve(&args.bind, availability, |management| {
            server.management(management).router()
        })
        .await
}

#[cfg(feature = "etcd")]
fn with_etcd(server: RegistryServer, url: &str, prefix: &str) -> Result<RegistryServer, String> {
    let client = msa_core::etcd::LazyClient::new(url).map_err(|e| format!("--store {e}"))?;
    tracing::info!(store = %msa_core::secrets::mask_url(url), %prefix, "instances kept in etcd");
    Ok(server.etcd(msa_discovery::registry::EtcdStore::with_client(
        client, prefix,
    )))
}

#[cfg(not(feature = "etcd"))]
fn with_etcd(_: RegistryServer, _: &str, _: &str) -> Result<RegistryServer, String> {
    Err("--store etcd://...: this msa-registry was built without the `etcd` feature".into())
}
