//! `msa-gateway --config FILE.yaml [--bind ADDR] [--management-bind ADDR]
//! [--management-token-file PATH]`: the gateway's command line, for the `msa-gateway`
//! binary and for a team's own gateway binary with filters of its own ([`main`]).

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

use crate::filter::Filters;
use crate::{Gateway, GatewayConfig, Options, Server};

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

/// The `msa-gateway` binary's `main`, with a team's own `filters`: parses the command line,
/// serves the routes file until SIGTERM or Ctrl-C, and exits with the reason on failure.
/// A gateway binary of one's own is this, with its filters registered:
///
/// ```no_run
/// use msa_gateway::filter::Filters;
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     msa_gateway::cli::main(Filters::new()).await
/// }
/// ```
pub async fn main(filters: Filters) -> ExitCode {
    let args = Args::parse();
    shutdown::exit("msa-gateway", run(args, filters).await)
}

async fn run(args: Args, filters: Filters) -> Result<(), String> {
    let mut config = GatewayConfig::load(&args.config).map_err(|e| e.to_string())?;
    // `--ssl-certificate` and its key, as the other msa servers take them, over the file's.
    let flags = args.server.tls.server_tls();
    if flags.client_auth != msa_core::tls::ClientAuth::None {
        return Err("--ssl-client-auth: msa-gateway does not ask clients for certificates".into());
    }
    if flags.certificate.is_some() {
        config.server.ssl.enabled = Some(true);
        config.server.ssl.certificate = flags.certificate;
        config.server.ssl.certificate_private_key = flags.certificate_private_key;
        config.server.ssl.bundle = None;
    }
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
    let gateway = Gateway::with_filters(&config, filters)
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
