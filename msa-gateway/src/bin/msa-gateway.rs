//! `msa-gateway --config FILE.yaml [--bind ADDR] [--management-token-file PATH]`: the API
//! gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use msa_core::actuator::Actuator;
use msa_core::management::Management;
use msa_core::shutdown::{self, Shutdown};
use msa_core::telemetry::Telemetry;
use msa_gateway::{Gateway, GatewayConfig, Server};

// A proxy allocates a little for every request; mimalloc's thread-local free lists serve
// that with no contention between the worker threads (measured: bench/gateway-vs-nginx.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The msa API gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The routes file (Spring Cloud Gateway's vocabulary); edits are applied while running.
    #[arg(long, value_name = "FILE.yaml")]
    config: PathBuf,
    /// Where to listen (overrides the file's server.bind).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// A file holding the management token that `/actuator/gateway/*` requires as
    /// `Authorization: Bearer TOKEN` (else MSA_MANAGEMENT_TOKEN; with neither, those
    /// endpoints answer only on a loopback bind).
    #[arg(long, value_name = "PATH")]
    management_token_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    shutdown::exit("msa-gateway", run(args).await)
}

async fn run(args: Args) -> Result<(), String> {
    let config = GatewayConfig::load(&args.config).map_err(|e| e.to_string())?;
    let _telemetry = Telemetry::new("msa-gateway")
        .init()
        .map_err(|e| e.to_string())?;
    let bind: SocketAddr = match args.bind {
        Some(bind) => bind.parse().map_err(|e| format!("--bind {bind}: {e}"))?,
        None => config.server.bind,
    };
    let management = Management::from_settings(bind, args.management_token_file.as_deref())?;
    let gateway = Gateway::new(&config)
        .map_err(|e| e.to_string())?
        .with_file(&args.config)
        .with_management(management);
    tracing::info!(routes = config.routes.len(), file = %args.config.display(), "routes loaded");
    gateway.watch_file(Duration::from_millis(500));
    let actuator = Actuator::new("msa-gateway").version(env!("CARGO_PKG_VERSION"));
    let admin = gateway.admin_router(actuator);
    let workers = config.server.workers();
    let server =
        Server::start(gateway, admin, bind, workers).map_err(|e| format!("--bind {bind}: {e}"))?;
    tracing::info!(addr = %server.local_addr(), workers, "listening");
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    shutdown.triggered().await;
    tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(30)))
        .await
        .map_err(|e| e.to_string())
}
