//! The msa API gateway: Spring Cloud Gateway's route vocabulary (predicates, filters,
//! `lb://` through msa-discovery's balancer) on pooled upstream connections (its own
//! HTTP/1.1 client for plain `http://`, hyper's for TLS, WebSocket and h2c), with hot
//! reload.
//!
//! ```no_run
//! use msa_gateway::{Gateway, GatewayConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = GatewayConfig::load("gateway.yaml")?; // errors name file, line and key
//! let gateway = Gateway::new(&config)?.with_file("gateway.yaml");
//! let admin = gateway.admin_router(msa_core::actuator::Actuator::new("msa-gateway"));
//! let server = msa_gateway::Server::start(gateway, admin, config.server.bind, 2)?;
//! // ... until shutdown:
//! server.stop(std::time::Duration::from_secs(30));
//! # Ok(()) }
//! ```
//!
//! The `msa-gateway` binary serves it: `msa-gateway --config gateway.yaml`.

mod admin;
pub mod cli;
mod client;
pub mod config;
mod error;
pub mod filter;
mod gateway;
mod h1;
mod observe;
mod proxy;
mod route;
mod server;
mod tls;

pub use self::config::{ConfigError, GatewayConfig};
pub use self::gateway::Gateway;
pub use self::observe::access_log::AccessLogConfig;
pub use self::server::{Options, Server};
