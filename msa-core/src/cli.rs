//! The flags every msa server binary shares (feature `cli`): where management endpoints
//! are served and who may call them, every listener's limits, and how shutdown goes.
//!
//! Flatten [`ServerArgs`] into a binary's clap arguments next to its own `--bind`:
//!
//! ```no_run
//! use clap::Parser;
//! use msa_core::actuator::Actuator;
//! use msa_core::cli::ServerArgs;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[arg(long, default_value = "127.0.0.1:9000")]
//!     bind: String,
//!     #[command(flatten)]
//!     server: ServerArgs,
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), String> {
//! let args = Args::parse();
//! let actuator = Actuator::new("my-server");
//! let availability = actuator.availability();
//! args.server
//!     .serve(&args.bind, availability, |management| actuator.management(management).router())
//!     .await
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::actuator::Availability;
use crate::listener::{self, Limits, Listeners};
use crate::management::Management;
use crate::shutdown::Shutdown;

/// The flags every msa server binary accepts; see the [module docs](self).
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Serve the actuator's endpoints (all but /actuator/health and /actuator/info, which
    /// stay on --bind too) on this address instead of --bind.
    #[arg(long, value_name = "ADDR")]
    pub management_bind: Option<String>,
    /// A file holding the management token that endpoints changing state or revealing
    /// configuration require as `Authorization: Bearer TOKEN` (else MSA_MANAGEMENT_TOKEN;
    /// with neither, they answer only on a loopback management listener).
    #[arg(long, value_name = "PATH")]
    pub management_token_file: Option<PathBuf>,
    /// How long a client may take to send a request head.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse)]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::duration::parse)]
    pub idle_timeout: Duration,
    /// How many connections each listener serves at once; more wait in the backlog.
    #[arg(long, value_name = "N", default_value_t = listener::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// On SIGTERM, keep serving this long after readiness goes DOWN, before draining (so
    /// load balancers see it first).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::duration::parse)]
    pub shutdown_grace: Duration,

    /// TLS on the main listener.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS on a server's main listener, as Spring Boot's `server.ssl.*` PEM settings.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (Spring: `server.ssl.certificate`).
    #[arg(long, value_name = "PEM", requires = "ssl_certificate_private_key")]
    pub ssl_certificate: Option<PathBuf>,
    /// The certificate's PEM private key (Spring: `server.ssl.certificate-private-key`).
    #[arg(long, value_name = "PEM", requires = "ssl_certificate")]
    pub ssl_certificate_private_key: Option<PathBuf>,
    /// PEM file of the CAs whose client certificates are accepted (Spring:
    /// `server.ssl.trust-certificate`).
    #[arg(long, value_name = "PEM")]
    pub ssl_trust_certificate: Option<PathBuf>,
    /// Ask clients for certificates: none, want or need (Spring: `server.ssl.client-auth`).
    #[arg(long, value_name = "MODE", default_value = "none")]
    pub ssl_client_auth: crate::tls::ClientAuth,
}

impl TlsArgs {
    /// These flags as [`ServerTls`](crate::tls::ServerTls) settings.
    pub fn server_tls(&self) -> crate::tls::ServerTls {
        crate::tls::ServerTls {
            enabled: None,
            certificate: self.ssl_certificate.clone(),
            certificate_private_key: self.ssl_certificate_private_key.clone(),
            trust_certificate: self.ssl_trust_certificate.iter().cloned().collect(),
            client_auth: self.ssl_client_auth,
        }
    }

    /// The rustls configuration the flags ask for, or `None` without `--ssl-certificate`.
    pub fn config(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
        self.server_tls().config().map_err(|e| e.to_string())
    }
}

impl ServerArgs {
    /// The bounds every listener applies.
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }

    /// Binds `--management-bind`, if given (a failure names the flag).
    pub async fn bind_management(&self) -> Result<Option<TcpListener>, String> {
        match &self.management_bind {
            None => Ok(None),
            Some(bind) => {
                let listener = TcpListener::bind(bind)
                    .await
                    .map_err(|e| format!("--management-bind {bind}: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                tracing::info!(%addr, "management listening");
                Ok(Some(listener))
            }
        }
    }

    /// The management settings for endpoints served on a listener bound to `served_on`
    /// (the management listener if there is one, else the main one).
    pub fn management(&self, served_on: SocketAddr) -> Result<Management, String> {
        Management::from_settings(served_on, self.management_token_file.as_deref())
    }

    /// A shutdown coordinator for a server binary: SIGINT/SIGTERM trigger it, `availability`
    /// turns not ready first, and serving goes on for `--shutdown-grace` before draining.
    pub fn shutdown(&self, availability: Availability) -> Shutdown {
        let shutdown = Shutdown::new();
        shutdown.unready_first(availability);
        shutdown.set_grace(self.shutdown_grace);
        shutdown.listen_for_signals();
        shutdown
    }

    /// A server binary's serving: binds `bind` (a failure reads `--bind ADDR: reason`) and
    /// `--management-bind`, builds the app for the management settings of the listener its
    /// management endpoints are served on, and serves it until SIGINT/SIGTERM, with
    /// readiness DOWN before draining.
    pub async fn serve(
        &self,
        bind: &str,
        availability: Availability,
        app: impl FnOnce(Management) -> Router,
    ) -> Result<(), String> {
        let main = TcpListener::bind(bind)
            .await
            .map_err(|e| format!("--bind {bind}: {e}"))?;
        let addr = main.local_addr().map_err(|e| e.to_string())?;
        let management = self.bind_management().await?;
        let served_on = match &management {
            Some(listener) => listener.local_addr().map_err(|e| e.to_string())?,
            None => addr,
        };
        let app = app(self.management(served_on)?);
        tracing::info!(%addr, "listening");
        let listeners = Listeners::new(main, app)
            .management(management)
            .limits(self.limits())
            .tls(self.tls.config()?);
        self.shutdown(availability)
            .serve_with(listeners)
            .await
            .map_err(|e| e.to_string())
    }
}
