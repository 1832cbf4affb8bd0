//! `App`: the service bootstrap.

use std::fmt;
use std::net::SocketAddr;

use axum::Router;
use msa_core::actuator::{Actuator, Availability};
use msa_core::http::ServerLayer;
use msa_core::shutdown::Shutdown;
use msa_core::telemetry::{Telemetry, TelemetryError, TelemetryGuard};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why an [`App`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Logging or tracing could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A service's `main()` in one expression: telemetry, actuator endpoints, the server layer
/// and graceful shutdown around an axum router.
///
/// [`App::start`] (or [`App::run`]):
///
/// 1. initialises [`Telemetry`] for the app's name (unless the process already has a
///    global subscriber, as when several apps share a process);
/// 2. merges the app's router with the [`Actuator`] endpoints and wraps both in
///    [`ServerLayer`], so every request is traced and counted;
/// 3. serves on the bind address until SIGINT/SIGTERM (or [`Running::shutdown`]), then marks
///    readiness down, runs the shutdown hooks, drains in-flight requests and flushes
///    telemetry.
#[must_use = "an App does nothing until started"]
pub struct App {
    name: String,
    version: Option<String>,
    bind: String,
    router: Router,
    actuator: Actuator,
    shutdown: Shutdown,
    signals: bool,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bind", &self.bind)
            .field("actuator", &self.actuator)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app called `name`, listening on `127.0.0.1:8080` unless told otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        App {
            actuator: Actuator::new(name.clone()),
            name,
            version: None,
            bind: "127.0.0.1:8080".to_owned(),
            router: Router::new(),
            shutdown: Shutdown::new(),
            signals: true,
        }
    }

    /// The app's version, for `/actuator/info` and the `service.version` resource attribute.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let version = version.into();
        self.actuator = self.actuator.version(version.clone());
        self.version = Some(version);
        self
    }

    /// The listen address (`host:port`; port 0 picks a free port).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// The app's routes; merged with any given before.
    pub fn router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Customises the actuator endpoints (health indicators, info entries, refresh hooks).
    pub fn actuator(mut self, f: impl FnOnce(Actuator) -> Actuator) -> Self {
        self.actuator = f(self.actuator);
        self
    }

    /// The shutdown coordinator, to add hooks before the app starts.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Whether SIGINT/SIGTERM stop the app (on by default). Turn it off when something
    /// else owns the process's signals.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Binds and starts serving in the background.
    pub async fn start(self) -> Result<Running, Error> {
        let mut telemetry = Telemetry::new(self.name.clone());
        if let Some(version) = &self.version {
            telemetry = telemetry.version(version.clone());
        }
        let guard = match telemetry.init() {
            Ok(guard) => Some(guard),
            Err(TelemetryError::AlreadyInitialized) => None,
            Err(error) => return Err(error.into()),
        };

        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: self.bind.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::Serve)?;

        let availability = self.actuator.availability();
        let app = self
            .router
            .merge(self.actuator.router())
            .layer(ServerLayer::new());

        let shutdown = self.shutdown;
        // Readiness goes down first, before any hook the app added.
        let ready = availability.clone();
        shutdown.before_drain_first("readiness", move || async move { ready.set_ready(false) });
        if let Some(guard) = guard {
            shutdown.after_drain("telemetry", move || flush(guard));
        }
        if self.signals {
            shutdown.listen_for_signals();
        }
        tracing::info!(app = %self.name, addr = %local_addr, "started");
        let server = shutdown.clone();
        let task = tokio::spawn(async move { server.serve(listener, app).await });
        Ok(Running {
            local_addr,
            shutdown,
            availability,
            task,
        })
    }

    /// Starts the app and waits until it has shut down.
    pub async fn run(self) -> Result<(), Error> {
        self.start().await?.wait().await
    }
}

async fn flush(guard: TelemetryGuard) {
    // Flushing blocks on the exporter's HTTP calls: keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
}

/// A started [`App`].
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shutdown: Shutdown,
    availability: Availability,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The address the app listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The app's shutdown coordinator.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The app's liveness and readiness.
    pub fn availability(&self) -> &Availability {
        &self.availability
    }

    /// Starts shutdown and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the app has shut down.
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await?.map_err(Error::Serve)
    }
}
