//! msa is Spring Cloud for Rust: discovery, client-side load balancing, central config,
//! resilience, distributed tracing and an API gateway, as tower layers that compose with
//! axum, hyper, tonic and reqwest, plus three ready servers built from the same crates.
//!
//! This facade re-exports the crates a service needs and offers [`App`], the bootstrap that
//! wires them together in `main()`: telemetry, actuator and graceful shutdown always;
//! registration, discovery and a balanced, breaker-guarded client with
//! [`App::registry`]; live configuration from a config server with [`App::live_config`];
//! all of it configured like Spring Boot, from `application.yml`, profiles and the
//! environment.
//! Features `breaker`, `discovery` and `config` are on by default; `dns` adds discovery
//! from DNS records (Kubernetes headless services), `gateway` the gateway library, `full`
//! both. A service links the clients only: the servers' code stays out of its build.
//!
//! | crate | feature | what it brings |
//! |---|---|---|
//! | [`core`] (msa-core) | always | instance model, telemetry, HTTP tracing layers, actuator, graceful shutdown |
//! | `breaker` (msa-breaker) | `breaker` | circuit breaker, retry with budget, timeout, bulkhead, rate limiter, fallback |
//! | `discovery` (msa-discovery) | `discovery` | registry, discovery client, load balancer |
//! | `config` (msa-config) | `config` | Spring Cloud Config-compatible server and live-reloading client |
//! | `gateway` (msa-gateway) | `gateway` | API gateway |
//!
//! # Examples
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! # #[tokio::main] async fn main() -> Result<(), msa::Error> {
//! let router = Router::new().route("/hello/{name}", get(|| async { "hello" }));
//! msa::App::new("greeter")
//!     .version(env!("CARGO_PKG_VERSION"))
//!     .bind("127.0.0.1:8080")
//!     .router(router)
//!     .run()
//!     .await
//! # }
//! ```

pub use msa_core as core;
pub use msa_core::{
    InstanceStatus, ServiceInstance, actuator, http, management, shutdown, telemetry,
};

#[cfg(feature = "breaker")]
pub use msa_breaker as breaker;
#[cfg(feature = "config")]
pub use msa_config as config;
#[cfg(feature = "discovery")]
pub use msa_discovery as discovery;
#[cfg(feature = "events")]
pub use msa_events as events;
#[cfg(feature = "gateway")]
pub use msa_gateway as gateway;
#[cfg(feature = "stream")]
pub use msa_stream as stream;

mod app;

pub use self::app::{App, Error, Running};

/// The user guide from `docs/`, included here so that its examples compile and run as
/// doctests.
pub mod guide {
    #[cfg(all(feature = "discovery", feature = "config"))]
    #[doc = include_str!("../docs/getting-started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../docs/core.md")]
    pub mod core {}
    #[cfg(feature = "stream")]
    #[doc = include_str!("../docs/messaging.md")]
    pub mod messaging {}
    #[cfg(feature = "events")]
    #[doc = include_str!("../docs/events.md")]
    pub mod events {}
    #[cfg(all(feature = "breaker", feature = "discovery"))]
    #[doc = include_str!("../docs/clients.md")]
    pub mod clients {}
    #[cfg(feature = "breaker")]
    #[doc = include_str!("../docs/resilience.md")]
    pub mod resilience {}
    #[cfg(feature = "discovery")]
    #[doc = include_str!("../docs/discovery.md")]
    pub mod discovery {}
    #[cfg(feature = "config")]
    #[doc = include_str!("../docs/config.md")]
    pub mod config {}
    #[cfg(feature = "gateway")]
    #[doc = include_str!("../docs/gateway.md")]
    pub mod gateway {}
    #[doc = include_str!("../docs/shop.md")]
    pub mod shop {}
    #[doc = include_str!("../docs/reference.md")]
    pub mod reference {}
    #[doc = include_str!("../docs/servers.md")]
    pub mod servers {}
    #[doc = include_str!("../docs/security.md")]
    pub mod security {}
    #[doc = include_str!("../docs/scaling.md")]
    pub mod scaling {}
    #[doc = include_str!("../docs/migration.md")]
    pub mod migration {}
}
