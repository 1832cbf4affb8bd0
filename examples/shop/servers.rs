//! The estate's three servers, run from the same library code as the `msa-registry`,
//! `msa-config-server` and `msa-gateway` binaries, each in its own process.

use std::path::PathBuf;
use std::time::Duration;

use msa::actuator::Actuator;
use msa::config::server::{ConfigServer, DirRepository};
use msa::discovery::registry::{RegistryServer, Store, StoreConfig};
use msa::management::Management;
use msa::shutdown::Shutdown;
use msa::telemetry::Telemetry;
use msa_gateway::{Gateway, GatewayConfig, Server};

use crate::common::{BoxError, announce, stop_on_eof};

/// Options of a server process.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Where to listen.
    #[arg(long)]
    pub(crate) bind: String,
    /// The config server's directory, or the gateway's routes file.
    #[arg(long)]
    pub(crate) source: Option<PathBuf>,
    /// Stop (cleanly) when stdin closes.
    #[arg(long)]
    pub(crate) stop_on_eof: bool,
}

async fn serve(name: &str, args: &ServerArgs, router: axum::Router) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("{name}: cannot listen on {}: {e}", args.bind))?;
    announce(listener.local_addr()?);
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    if args.stop_on_eof {
        stop_on_eof(&shutdown);
    }
    Ok(shutdown.serve(listener, router).await?)
}

/// msa-registry.
pub(crate) async fn registry(args: ServerArgs) -> Result<(), BoxError> {
    let _telemetry = Telemetry::new("msa-registry").init()?;
    let server = RegistryServer::new(Store::new(StoreConfig::default()));
    server.spawn_sweeper();
    serve("msa-registry", &args, server.router()).await
}

/// msa-config-server over a directory.
pub(crate) async fn config_server(args: ServerArgs) -> Result<(), BoxError> {
    let _telemetry = Telemetry::new("msa-config-server").init()?;
    let dir = args.source.clone().ok_or("--source DIR is required")?;
    let repository =
        DirRepository::open(&dir).map_err(|e| format!("--source {}: {e}", dir.display()))?;
    let bind = args
        .bind
        .parse()
        .map_err(|e| format!("--bind {}: {e}", args.bind))?;
    let management = Management::from_settings(bind, None)?;
    let server = ConfigServer::new(repository).management(management);
    serve("msa-config-server", &args, server.router()).await
}

/// msa-gateway with a routes file, reloaded when it changes: the web gateway, or the
/// mobile one (a backend for frontend, `gateway-mobile.yaml`).
pub(crate) async fn gateway(args: ServerArgs) -> Result<(), BoxError> {
    let file = args
        .source
        .clone()
        .ok_or("--source FILE.yaml is required")?;
    let config = GatewayConfig::load(&file)?;
    let _telemetry = Telemetry::new("msa-gateway").init()?;
    // Spring Cloud Gateway's filters and the shop's own (the mobile gateway's JsonFields).
    let gateway = Gateway::with_filters(&config, crate::bff::filters())?.with_file(&file);
    gateway.watch_file(Duration::from_millis(500));
    let bind = args
        .bind
        .parse()
        .map_err(|e| format!("--bind {}: {e}", args.bind))?;
    let gateway = gateway.with_management(Management::from_settings(bind, None)?);
    let admin = gateway.admin_router(Actuator::new("msa-gateway"));
    let server = Server::start(gateway, admin, bind, config.server.workers())
        .map_err(|e| format!("msa-gateway: cannot listen on {bind}: {e}"))?;
    announce(server.local_addr());
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    if args.stop_on_eof {
        stop_on_eof(&shutdown);
    }
    shutdown.triggered().await;
    tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(10))).await?;
    Ok(())
}

/// Options of the admin process: msa-admin's own flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    admin: msa_admin::cli::Args,
    /// Stop when stdin closes.
    #[arg(long)]
    stop_on_eof: bool,
}

/// msa-admin, as its binary runs it; it stops when stdin closes (`--stop-on-eof`).
pub(crate) async fn admin(args: AdminArgs) -> Result<(), BoxError> {
    // The estate gives it a fixed or free --bind: announce it for the estate's banner.
    println!("listening on http://{}", args.admin.bind);
    let eof = async {
        if args.stop_on_eof {
            let shutdown = Shutdown::new();
            stop_on_eof(&shutdown);
            shutdown.triggered().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        outcome = msa_admin::cli::run(args.admin.clone()) => Ok(outcome?),
        () = eof => Ok(()),
    }
}
