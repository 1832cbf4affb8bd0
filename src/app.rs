//! `App`: the service bootstrap.

use std::fmt;
use std::net::SocketAddr;

use axum::Router;
use msa_core::actuator::{Actuator, Availability};
use msa_core::http::ServerLayer;
use msa_core::listener::{Limits, Listeners};
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
    /// The management settings are invalid (`MSA_MANAGEMENT_TOKEN` set but empty, a bad
    /// `MANAGEMENT_SERVER_PORT` or `MANAGEMENT_SERVER_ADDRESS`).
    #[error("management: {0}")]
    Management(String),
    /// Configuration could not be read from the config server (or its cached copy).
    #[cfg(feature = "config")]
    #[error("config: {0}")]
    Config(#[from] msa_config::client::ClientError),
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
    management_bind: Option<String>,
    limits: Limits,
    router: Router,
    actuator: Actuator,
    shutdown: Shutdown,
    signals: bool,
    telemetry: Option<Option<TelemetryGuard>>,
    #[cfg(feature = "discovery")]
    registry: Option<Registry>,
    #[cfg(feature = "discovery")]
    registered: Registered,
    #[cfg(feature = "config")]
    config: Option<msa_config::client::ConfigClient>,
    #[cfg(feature = "breaker")]
    breakers: Option<msa_breaker::circuit_breaker::CircuitBreakerRegistry>,
}

/// The registry an app registers with and discovers through.
#[cfg(feature = "discovery")]
#[derive(Clone, Debug)]
struct Registry {
    url: String,
    balancer: msa_discovery::balance::Balancer,
}

/// How the instance registers (settable before or after [`App::registry`]).
#[cfg(feature = "discovery")]
#[derive(Clone, Debug, Default)]
struct Registered {
    advertise: Option<String>,
    zone: Option<String>,
    lease: Option<(std::time::Duration, std::time::Duration)>,
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
            management_bind: None,
            limits: Limits::default(),
            router: Router::new(),
            shutdown: Shutdown::new(),
            signals: true,
            telemetry: None,
            #[cfg(feature = "discovery")]
            registry: None,
            #[cfg(feature = "discovery")]
            registered: Registered::default(),
            #[cfg(feature = "config")]
            config: None,
            #[cfg(feature = "breaker")]
            breakers: None,
        }
    }

    /// The app's name: its service name in the registry and its application name at the
    /// config server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets up logging and tracing once (the first of [`start`](Self::start) and the
    /// config calls does it), unless the process already has a global subscriber.
    fn init_telemetry(&mut self) -> Result<(), Error> {
        if self.telemetry.is_some() {
            return Ok(());
        }
        let mut telemetry = Telemetry::new(self.name.clone());
        if let Some(version) = &self.version {
            telemetry = telemetry.version(version.clone());
        }
        self.telemetry = Some(match telemetry.init() {
            Ok(guard) => Some(guard),
            Err(TelemetryError::AlreadyInitialized) => None,
            Err(error) => return Err(error.into()),
        });
        Ok(())
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

    /// Serves the actuator's endpoints on a listener of their own at `addr` (Spring Boot's
    /// `management.server.port`): all of them there, and only the probes
    /// (`/actuator/health…`, `/actuator/info`) on the main listener. A registered instance
    /// then carries `management.port` in its metadata.
    ///
    /// Without this, `MANAGEMENT_SERVER_PORT` (and `MANAGEMENT_SERVER_ADDRESS`, else the
    /// main listener's address) in the environment choose it, as in Spring Boot.
    pub fn management_bind(mut self, addr: impl Into<String>) -> Self {
        self.management_bind = Some(addr.into());
        self
    }

    /// The bounds both listeners apply: header-read and idle timeouts, the connection cap
    /// (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
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
    pub async fn start(mut self) -> Result<Running, Error> {
        self.init_telemetry()?;
        let guard = self.telemetry.take().flatten();

        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: self.bind.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::Serve)?;
        if self.management_bind.is_none() {
            self.management_bind = management_bind_from(
                local_addr,
                std::env::var("MANAGEMENT_SERVER_PORT").ok(),
                std::env::var("MANAGEMENT_SERVER_ADDRESS").ok(),
            )
            .map_err(Error::Management)?;
        }
        let management_listener = match &self.management_bind {
            Some(bind) => Some(
                TcpListener::bind(bind)
                    .await
                    .map_err(|source| Error::Bind {
                        addr: bind.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let management_addr = match &management_listener {
            Some(listener) => Some(listener.local_addr().map_err(Error::Serve)?),
            None => None,
        };
        // `/actuator/refresh`: the token from MSA_MANAGEMENT_TOKEN, or only on a loopback
        // management listener (the main one when there is no other).
        let management = msa_core::management::Management::from_settings(
            management_addr.unwrap_or(local_addr),
            None,
        )
        .map_err(Error::Management)?;

        let availability = self.actuator.availability();
        let app = self
            .router
            .merge(self.actuator.management(management).router())
            .layer(ServerLayer::new());

        let shutdown = self.shutdown;
        // Readiness goes down first, before any hook the app added.
        shutdown.unready_first(availability.clone());
        if let Some(guard) = guard {
            shutdown.after_drain("telemetry", move || flush(guard));
        }
        if self.signals {
            shutdown.listen_for_signals();
        }
        #[cfg(feature = "discovery")]
        if let Some(registry) = &self.registry {
            let version = self.version.as_deref();
            let management_port = management_addr.map(|addr| addr.port());
            registry.register(
                &self.name,
                version,
                &self.registered,
                (local_addr, management_port),
                &shutdown,
            );
        }
        tracing::info!(app = %self.name, addr = %local_addr, management = ?management_addr, "started");
        let server = shutdown.clone();
        let listeners = Listeners::new(listener, app)
            .management(management_listener)
            .limits(self.limits);
        let task = tokio::spawn(async move { server.serve_with(listeners).await });
        Ok(Running {
            local_addr,
            management_addr,
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

/// The management listener Spring Boot's `management.server.port` and `.address` ask for
/// (from `MANAGEMENT_SERVER_PORT` and `MANAGEMENT_SERVER_ADDRESS`, as Spring's relaxed
/// binding reads them): none without a port, or when it is the main listener's port; the
/// main listener's address when no address is given.
fn management_bind_from(
    main: SocketAddr,
    port: Option<String>,
    address: Option<String>,
) -> Result<Option<String>, String> {
    let Some(port) = port else { return Ok(None) };
    let port: u16 = port.trim().parse().map_err(|_| {
        format!("MANAGEMENT_SERVER_PORT {port:?} is not a port number (0 to 65535)")
    })?;
    if port == main.port() && address.is_none() {
        return Ok(None);
    }
    let ip = match address {
        Some(address) => address
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("MANAGEMENT_SERVER_ADDRESS {address:?} is not an IP address"))?,
        None => main.ip(),
    };
    Ok(Some(SocketAddr::new(ip, port).to_string()))
}

async fn flush(guard: TelemetryGuard) {
    // Flushing blocks on the exporter's HTTP calls: keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
}

/// A started [`App`].
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    management_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    availability: Availability,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The address the app listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the management listener, if the app has one
    /// ([`App::management_bind`]).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
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

#[cfg(feature = "discovery")]
impl Registry {
    fn register(
        &self,
        name: &str,
        version: Option<&str>,
        registered: &Registered,
        (addr, management_port): (SocketAddr, Option<u16>),
        shutdown: &Shutdown,
    ) -> msa_discovery::registration::Registration {
        use msa_core::ServiceInstance;
        use msa_discovery::registration::Registration;
        let host = match &registered.advertise {
            Some(host) => host.clone(),
            None if addr.ip().is_unspecified() => "127.0.0.1".to_owned(),
            None => addr.ip().to_string(),
        };
        let mut instance = ServiceInstance::new(name, host, addr.port());
        if let Some(zone) = &registered.zone {
            instance = instance.with_zone(zone.clone());
        }
        if let Some(version) = version {
            instance = instance.with_metadata("version", version);
        }
        if let Some(port) = management_port {
            // Spring Cloud's key, which Spring Boot Admin and Prometheus' Eureka discovery
            // read to find the actuator.
            instance = instance.with_metadata("management.port", port.to_string());
        }
        let mut registration = Registration::new(format!("{}/eureka", self.url), instance);
        if let Some((renewal, lease)) = registered.lease {
            registration = registration.timings(renewal, lease);
        }
        registration.start(shutdown)
    }
}

/// Discovery: register with a registry and call other services by name.
#[cfg(feature = "discovery")]
impl App {
    /// Registers the app with the registry at `url` (msa-registry, or a Eureka server:
    /// `http://127.0.0.1:8761`) once it listens, renews its lease while it runs and
    /// deregisters when it stops; and discovers other services through the registry's
    /// watch for [`client`](Self::client) and [`balancer`](Self::balancer), so a call to
    /// `http://inventory/...` goes to an `UP` instance of `inventory`.
    ///
    /// Call it inside a tokio runtime.
    pub fn registry(mut self, url: impl Into<String>) -> Self {
        use msa_discovery::balance::{Balancer, BalancerConfig};
        use msa_discovery::discovery::RegistryDiscovery;
        let url = url.into().trim_end_matches('/').to_owned();
        let balancer = Balancer::new(
            RegistryDiscovery::new(url.clone()),
            BalancerConfig::default(),
        );
        self.registry = Some(Registry { url, balancer });
        self
    }

    /// The host other services reach this app at (default: the bound address, or
    /// `127.0.0.1` when bound to all interfaces).
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.registered.advertise = Some(host.into());
        self
    }

    /// The zone the instance registers in (its `zone` metadata), for zone-preferring
    /// callers.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.registered.zone = Some(zone.into());
        self
    }

    /// How often the lease is renewed and how long it lasts unrenewed (default 10 s and
    /// 30 s).
    pub fn lease(mut self, renewal: std::time::Duration, lease: std::time::Duration) -> Self {
        self.registered.lease = Some((renewal, lease));
        self
    }

    /// The load balancer over the registry's instances (after [`registry`](Self::registry)),
    /// to wrap hyper or tonic clients in.
    pub fn balancer(&self) -> Option<msa_discovery::balance::Balancer> {
        self.registry.as_ref().map(|r| r.balancer.clone())
    }

    /// An HTTP client for calls to other services: it continues the current trace
    /// (`traceparent`) and records client spans and metrics; with the `breaker` feature
    /// it guards each service with a circuit breaker (see
    /// [`circuit_breakers`](Self::circuit_breakers)); and after
    /// [`registry`](Self::registry) it balances `http://<service>/...` over the
    /// service's instances, retrying refused connections on another one. Calls time out
    /// after 10 s. Build it once and clone it: clones share their connections.
    pub fn client(&self) -> reqwest_middleware::ClientWithMiddleware {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let builder = reqwest_middleware::ClientBuilder::new(http)
            .with(msa_core::http::TraceMiddleware::new());
        #[cfg(feature = "breaker")]
        let builder = builder.with(msa_breaker::middleware::CircuitBreakerMiddleware::new(
            self.breakers.clone().unwrap_or_else(|| {
                msa_breaker::circuit_breaker::CircuitBreakerRegistry::new(Default::default())
                    .unwrap_or_else(|_| unreachable!("the default section is valid"))
            }),
        ));
        let builder = match &self.registry {
            Some(registry) => builder.with(msa_discovery::balance::LoadBalancerMiddleware::new(
                registry.balancer.clone(),
            )),
            None => builder,
        };
        builder.build()
    }
}

/// Resilience: the breakers [`App::client`] guards calls with.
#[cfg(feature = "breaker")]
impl App {
    /// The circuit breakers for [`client`](Self::client)'s calls, one per service name
    /// (default: Resilience4j's defaults for every service).
    pub fn circuit_breakers(
        mut self,
        registry: msa_breaker::circuit_breaker::CircuitBreakerRegistry,
    ) -> Self {
        self.breakers = Some(registry);
        self
    }
}

/// Central configuration: read from a config server, kept live.
#[cfg(feature = "config")]
impl App {
    /// Reads the app's configuration (application = the app's name) from the config
    /// server at `uri` (msa-config-server or Spring Cloud Config Server).
    pub fn config_server(mut self, uri: impl Into<String>) -> Self {
        self.config = Some(msa_config::client::ConfigClient::new(self.name.clone()).uri(uri));
        self
    }

    /// Reads the app's configuration with `client` (profiles, label, credentials, a
    /// last-known-good cache file, fail-fast).
    pub fn config_client(mut self, client: msa_config::client::ConfigClient) -> Self {
        self.config = Some(client);
        self
    }

    /// The app's configuration as a live `T`: the config server's properties, overridden
    /// by environment variables `<APP>__<KEY>` (`ORDERS__PRICES__WIDGET=12`), rebuilt
    /// within milliseconds of a change at the server, and again on
    /// `POST /actuator/refresh`. A change that does not deserialize into `T` is logged and
    /// the last good value kept.
    ///
    /// Without [`config_server`](Self::config_server), Spring's default
    /// `http://localhost:8888` is asked.
    pub async fn live_config<T>(&mut self) -> Result<msa_config::client::LiveConfig<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.init_telemetry()?;
        let client = self
            .config
            .clone()
            .unwrap_or_else(|| msa_config::client::ConfigClient::new(self.name.clone()));
        let prefix = self.name.to_ascii_uppercase().replace('-', "_");
        let live = client
            .live(move |server| {
                config::Config::builder().add_source(server).add_source(
                    config::Environment::with_prefix(&prefix)
                        .prefix_separator("__")
                        .separator("__"),
                )
            })
            .await?;
        let hook = live.refresh_hook();
        self.actuator =
            std::mem::replace(&mut self.actuator, Actuator::new("")).on_refresh("config", hook);
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn springs_management_server_keys_choose_the_management_listener() {
        let main: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let port = |p: &str| Some(p.to_owned());
        assert_eq!(management_bind_from(main, None, None), Ok(None));
        assert_eq!(
            management_bind_from(main, port("8081"), None),
            Ok(Some("0.0.0.0:8081".to_owned()))
        );
        assert_eq!(
            management_bind_from(main, port("8081"), Some("127.0.0.1".into())),
            Ok(Some("127.0.0.1:8081".to_owned()))
        );
        assert_eq!(
            management_bind_from(main, port("9090"), Some("[::1]".into())),
            Ok(Some("[::1]:9090".to_owned()))
        );
        assert_eq!(management_bind_from(main, port("8080"), None), Ok(None));
        let bad = management_bind_from(main, port("80x"), None).unwrap_err();
        assert!(bad.starts_with("MANAGEMENT_SERVER_PORT"), "{bad}");
        let bad = management_bind_from(main, port("81"), Some("here".into())).unwrap_err();
        assert!(bad.starts_with("MANAGEMENT_SERVER_ADDRESS"), "{bad}");
    }
}
