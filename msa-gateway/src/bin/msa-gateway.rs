//! `msa-gateway --config FILE.yaml [--bind ADDR] [--management-bind ADDR]
//! [--management-token-file PATH]`: the API gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use msa_core::actuator::Actuator;
use msa_core::cli::ServerArgs;
use msa_core::listener::Listeners;
use msa_core::shutdown;
use msa_core::telemetry::Telemetry;
use msa_gateway::{Gateway, GatewayConfig, Options, Server};

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
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    shutdown::exit("msa-gateway", run(args).await)
}

async fn run(args: Args) -> Result<(), String> {
    if args.server.tls.ssl_certificate.is_some() {
        return Err(
            "--ssl-certificate: msa-gateway does not terminate TLS yet; \
             put a TLS proxy or load balancer in front of it"
                .into(),
        );
    }
    let config = GatewayConfig::load(&args.config).map_err(|e| e.to_string())?;
    let _telemetry = Telemetry::new("msa-gateway")
        .init()
        .map_err(|e| e.to_string())?;
    let bind: SocketAddr = match args.bind {
        Some(bind) => bind.parse().map_err(|e| format!("--bind {bind}: {e}"))?,
        None => config.server.bind,
    };
    let management_listener = args.server.bind_management().await?;
    let served_on = match &management_listener {
        Some(listener) => listener.local_addr().map_err(|e| e.to_string())?,
        None => bind,
    };
    let management = args.server.management(served_on)?;
    let gateway = Gateway::new(&config)
        .map_err(|e| e.to_string())?
        .with_file(&args.config)
        .with_management(management);
    tracing::info!(routes = config.routes.len(), file = %args.config.display(), "routes loaded");
    gateway.watch_file(Duration::from_millis(500));
    let actuator = Actuator::new("msa-gateway").version(env!("CARGO_PKG_VERSION"));
    let availability = actuator.availability();
    let admin = gateway.admin_router(actuator);
    let options = Options {
        workers: config.server.workers(),
        limits: args.server.limits(),
        management_elsewhere: management_listener.is_some(),
    };
    let server = Server::start_with(gateway, admin.clone(), bind, options)
        .map_err(|e| format!("--bind {bind}: {e}"))?;
    tracing::info!(addr = %server.local_addr(), workers = options.workers, "listening");
    let shutdown = args.server.shutdown(availability);
    // The management listener's serving runs the before-drain hooks when it has one; the
    // proxy stops accepting once they have run either way.
    let management = management_listener.map(|listener| {
        let listeners = Listeners::new(listener, admin).limits(options.limits);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { shutdown.serve_with(listeners).await })
    });
    shutdown.draining().await;
    tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(30)))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(management) = management {
        let _ = management.await;
    }
    Ok(())
}
