//! The `msa-admin` binary's flags and its run, for the binary and for estates that run
//! the admin in a process of their own (the shop does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use msa_core::actuator::Actuator;
use msa_core::cli::ServerArgs;
use msa_core::http::Authorization;
use msa_core::telemetry::Telemetry;
use msa_discovery::discovery::RegistryDiscovery;

use crate::Admin;
use crate::estate::EstateConfig;
use crate::otlp::Limits;

/// A web dashboard of an msa (or Spring) estate: every instance the registry lists with
/// its health, metrics, circuit breakers, log levels and environment; the service graph;
/// the gateway's routes and the config server's applications; and recent traces and logs
/// received over OTLP/HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "msa-admin", version)]
pub struct Args {
    /// The registry whose instances to show (msa-registry or any Eureka server; several
    /// comma-separated).
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// Address the pages listen on. Beyond loopback, a login is required (--token-file, or
    /// --user with --password-file).
    #[arg(long, default_value = "127.0.0.1:8790")]
    pub bind: String,
    /// Address of the OTLP/HTTP receiver (POST /v1/traces, /v1/logs).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318")]
    pub otlp_bind: String,
    /// A gateway to show the routes of (its management address; repeatable).
    #[arg(long, value_name = "URL")]
    pub gateway: Vec<String>,
    /// A config server to show the applications of (repeatable).
    #[arg(long, value_name = "URL")]
    pub config_server: Vec<String>,
    /// The pages' login: a token (as `Authorization: Bearer`, or as the password of HTTP
    /// Basic, which browsers ask for), read from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "user")]
    pub token_file: Option<PathBuf>,
    /// The pages' login: HTTP Basic with this user and the password in --password-file.
    #[arg(long, requires = "password_file")]
    pub user: Option<String>,
    /// The password for --user, read from this file.
    #[arg(long, value_name = "PATH", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// How often each instance's health is read.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = msa_core::duration::parse)]
    pub health_every: Duration,
    /// How often each instance's metrics are scraped.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = msa_core::duration::parse)]
    pub scrape_every: Duration,
    /// Bytes of spans kept in memory, at most.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_span_bytes: usize,
    /// Bytes of log records kept in memory, at most.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_log_bytes: usize,
    /// The flags every msa server shares (management listener and token, limits, TLS).
    #[command(flatten)]
    pub server: ServerArgs,
}

fn read_secret(flag: &str, file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{flag} {}: {e}", file.display()))?
        .trim()
        .to_owned();
    if text.is_empty() {
        return Err(format!("{flag} {}: the file is empty", file.display()));
    }
    Ok(text)
}

/// Runs the admin as `args` say until SIGINT/SIGTERM: installs telemetry, follows the
/// registry, serves the pages on `--bind` and the OTLP receiver on `--otlp-bind`.
pub async fn run(args: Args) -> Result<(), String> {
    let _telemetry = Telemetry::new("msa-admin")
        .version(env!("CARGO_PKG_VERSION"))
        .init()
        .map_err(|e| e.to_string())?;
    let bind: SocketAddr = args
        .bind
        .parse()
        .map_err(|e| format!("--bind {}: {e}", args.bind))?;
    let login = match (&args.token_file, &args.user, &args.password_file) {
        (Some(file), _, _) => Some(
            Authorization::token(&read_secret("--token-file", file)?, "msa-admin")
                .basic_challenge("msa-admin"),
        ),
        (None, Some(user), Some(file)) => Some(Authorization::basic(
            user,
            &read_secret("--password-file", file)?,
            "msa-admin",
        )),
        _ => None,
    };
    if login.is_none() && !bind.ip().is_loopback() {
        return Err(format!(
            "--bind {bind} is not a loopback address: give the pages a login \
             (--token-file, or --user with --password-file)"
        ));
    }
    // The estate's management token, for the instances' guarded endpoints.
    let token = match &args.server.management_token_file {
        Some(file) => Some(read_secret("--management-token-file", file)?),
        None => std::env::var(msa_core::management::TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    let admin = Admin::new(
        EstateConfig {
            health_every: args.health_every.max(Duration::from_millis(100)),
            scrape_every: args.scrape_every.max(Duration::from_millis(100)),
            token,
            ..EstateConfig::default()
        },
        Limits {
            span_bytes: args.max_span_bytes,
            log_bytes: args.max_log_bytes,
            ..Limits::default()
        },
    );
    let registry = RegistryDiscovery::new(&args.registry);
    admin.estate().follow(registry.catalog());
    for url in &args.gateway {
        admin
            .estate()
            .add_server("gateway", "msa-gateway", url)
            .map_err(|e| format!("--gateway {e}"))?;
    }
    for url in &args.config_server {
        admin
            .estate()
            .add_server("config-server", "msa-config-server", url)
            .map_err(|e| format!("--config-server {e}"))?;
    }
    let otlp = tokio::net::TcpListener::bind(&args.otlp_bind)
        .await
        .map_err(|e| format!("--otlp-bind {}: {e}", args.otlp_bind))?;
    let otlp_addr = otlp.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%otlp_addr, "OTLP/HTTP receiver listening");
    let receiver = admin.collector().receiver();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(otlp, receiver).await {
            tracing::error!(%error, "the OTLP receiver stopped");
        }
    });
    let actuator = Actuator::new("msa-admin").version(env!("CARGO_PKG_VERSION"));
    let availability = actuator.availability();
    let pages = admin.router(login);
    args.server
        .serve(&args.bind, availability, move |management| {
            pages
                .merge(actuator.management(management).router())
                .layer(msa_core::http::ServerLayer::new())
        })
        .await
}
