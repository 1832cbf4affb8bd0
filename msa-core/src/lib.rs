//! msa's shared vocabulary and cross-cutting layers: the service instance model, telemetry,
//! HTTP tracing and metrics layers, actuator endpoints and graceful shutdown.
//!
//! Every other msa crate builds on this one, and it depends on none of them.
//!
//! - [`ServiceInstance`]: one running copy of a service, as registries and load balancers
//!   see it.
//! - [`telemetry`]: one call sets up logs with trace ids, OpenTelemetry tracing with OTLP
//!   export, and W3C propagation.
//! - [`http`]: [`ServerLayer`](http::ServerLayer) and [`ClientLayer`](http::ClientLayer),
//!   tower layers that continue traces across services and feed request metrics.
//! - [`actuator`]: `/actuator/health`, `/info`, `/prometheus` and `/refresh`.
//! - [`shutdown`]: SIGINT/SIGTERM, ordered hooks, and draining of in-flight requests.
//! - [`listener`]: every listener's limits (header-read and idle timeouts, a connection
//!   cap, paced `accept()` retries), TLS, and the management listener.
//! - [`settings`]: configuration as Spring Boot reads it (`application.yml`, profiles,
//!   relaxed environment binding, layers), bound to serde types with errors naming file,
//!   line and key; [`yaml`] keeps the line of every value.
//! - [`tls`]: rustls for every client (public, system and private roots) and server (PEM
//!   certificates, client-certificate checks).
//!
//! # Examples
//!
//! A service with tracing, metrics and actuator endpoints:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use msa_core::{actuator::Actuator, http::ServerLayer, shutdown::Shutdown, telemetry::Telemetry};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::new("greeter").init()?;
//! let app = Router::new()
//!     .route("/hello/{name}", get(|| async { "hello" }))
//!     .merge(Actuator::new("greeter").router())
//!     .layer(ServerLayer::new());
//!
//! let shutdown = Shutdown::new();
//! shutdown.listen_for_signals();
//! shutdown.after_drain("telemetry", move || async move { telemetry.shutdown() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! shutdown.serve(listener, app).await?;
//! # Ok(()) }
//! ```

pub mod actuator;
pub mod backoff;
#[cfg(feature = "cli")]
pub mod cli;
pub mod duration;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod http;
mod instance;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod listener;
pub mod management;
pub mod metrics;
pub mod secrets;
pub mod settings;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod wait;
pub mod yaml;

pub use self::instance::{
    DEFAULT_WEIGHT, InstanceStatus, ParseStatusError, Scheme, ServiceInstance,
};

/// The error type of msa's tower middleware, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
