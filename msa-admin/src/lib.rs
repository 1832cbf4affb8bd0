//! msa-admin: the estate at a glance.
//!
//! - [`estate`]: every instance the registry lists (through its watch) and every server
//!   the admin is told about, each polled on its management address: health, metrics
//!   into a bounded history, circuit breakers and their transitions, the calls it makes
//!   (the service graph).
//! - [`otlp`]: an OTLP/HTTP receiver keeping recent spans and log records in bounded
//!   memory, searched by service, duration and error, one trace as a waterfall, every log
//!   line of a trace across services.
//! - [`Admin`]: both behind one web application — pages compiled into the binary (no CDN),
//!   live updates over server-sent events, log levels changed through the instances'
//!   `/actuator/loggers`, environments with secrets masked — which the `msa-admin` binary
//!   serves.
//!
//! ```no_run
//! use msa_admin::Admin;
//! use msa_admin::estate::EstateConfig;
//! use msa_admin::otlp::Limits;
//! use msa_discovery::discovery::RegistryDiscovery;
//!
//! # #[tokio::main] async fn main() {
//! let admin = Admin::new(EstateConfig::default(), Limits::default());
//! admin.estate().follow(RegistryDiscovery::new("http://127.0.0.1:8761").catalog());
//! let pages = admin.router(None);
//! let otlp = admin.collector().receiver();
//! # let _ = (pages, otlp);
//! # }
//! ```

pub mod cli;
pub mod estate;
pub mod otlp;
pub mod scrape;
mod web;

use axum::Router;
use msa_core::http::Authorization;

use crate::estate::{Estate, EstateConfig};
use crate::otlp::{Collector, Limits};

/// The admin: the estate it follows and the traces and logs it receives.
#[derive(Clone, Debug)]
pub struct Admin {
    estate: Estate,
    collector: Collector,
}

impl Admin {
    /// An admin polling instances with `config` and keeping telemetry within `limits`.
    /// Call inside a tokio runtime.
    pub fn new(config: EstateConfig, limits: Limits) -> Admin {
        Admin {
            estate: Estate::new(config),
            collector: Collector::new(limits),
        }
    }

    /// The estate it follows.
    pub fn estate(&self) -> &Estate {
        &self.estate
    }

    /// The traces and logs it keeps.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// The pages and their JSON API (`/`, `/instances/{service}/{id}`, `/graph`,
    /// `/config`, `/traces`, `/traces/{trace_id}`, `/logs/{trace_id}`, `/api/...`). With
    /// `login`, every request needs it; without, only requests for `localhost` or a
    /// loopback address are answered (421 otherwise), so another site's page cannot reach
    /// them through a name that resolves to 127.0.0.1.
    pub fn router(&self, login: Option<Authorization>) -> Router {
        web::router(self.estate.clone(), &self.collector, login)
    }
}
