//! `App`: the service bootstrap, configured like a Spring Boot application.

#[cfg(feature = "discovery")]
mod address;
#[cfg(feature = "discovery")]
#[cfg(feature = "stream")]
mod bus;
mod client;
#[cfg(feature = "discovery")]
mod discovery;
#[cfg(feature = "events")]
mod events;
mod keys;
#[cfg(feature = "stream")]
mod stream;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
#[cfg(feature = "discovery")]
use std::sync::Arc;
use std::sync::OnceLock;
#[cfg(any(feature = "discovery", feature = "config"))]
use std::time::Duration;

use axum::Router;
use msa_core::actuator::{Actuator, Availability};
use msa_core::http::ServerLayer;
use msa_core::listener::{Limits, Listeners};
use msa_core::management::Management;
#[cfg(feature = "config")]
use msa_core::settings::Layer;
use msa_core::settings::{Load, Settings, SettingsError};
use msa_core::shutdown::Shutdown;
use msa_core::telemetry::{Telemetry, TelemetryError, TelemetryGuard};
use msa_core::tls::{ClientTls, ServerTls, TlsError};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::keys::Msa;

/// Why an [`App`] could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Logging or tracing could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    /// A setting does not read: the file and line (or environment variable) and the key.
    #[error("settings: {0}")]
    Settings(#[from] SettingsError),
    /// A TLS file (certificate, key, CA) cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The discovery settings cannot be used.
    #[error("discovery: {0}")]
    Discovery(String),
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
    /// The management settings are invalid (an empty token, a bad
    /// `management.server.port` or `.address`).
    #[error("management: {0}")]
    Management(String),
    /// Configuration could not be read from the config server (or its cached copy).
    #[cfg(feature = "config")]
    #[error("config: {0}")]
    Config(#[from] msa_config::client::ClientError),
    /// The stream could not bind its inputs.
    #[cfg(feature = "stream")]
    #[error("stream: {0}")]
    Stream(#[from] msa_stream::stream::StreamError),
    /// The service's database (msa-events) failed.
    #[cfg(feature = "events")]
    #[error("events: {0}")]
    Events(#[from] msa_events::Error),
}

/// A service's `main()` in one expression, configured like a Spring Boot application.
///
/// # Settings
///
/// An app reads [`Settings`] as Spring Boot does: `application.yml` and
/// `application-{profile}.yml` in the working directory and `config/`, the profiles in
/// `MSA_PROFILES_ACTIVE` or `SPRING_PROFILES_ACTIVE` (or `spring.profiles.active`),
/// environment variables with relaxed binding (`SERVER_PORT` is `server.port`), and a
/// config server through `spring.config.import: "optional:configserver:http://…"`. Every
/// builder method sets a key (its docs name it); code wins over the environment, the
/// environment over the config server, the config server over files. The keys, with their
/// Spring equivalents, are listed in the guide's configuration reference. Spring keys
/// msa does not implement are accepted with one warning naming them; a mistake under
/// `msa.*` fails start-up naming the file, line and key.
///
/// # Starting
///
/// [`App::start`] (or [`App::run`]):
///
/// 1. reads the settings (and the config server's properties) and initialises
///    [`Telemetry`] for the app's name, with `logging.level.*` as the log filter unless
///    `RUST_LOG` is set (and unless the process already has a global subscriber);
/// 2. merges the app's router with the [`Actuator`] endpoints and wraps both in
///    [`ServerLayer`], so every request is traced and counted;
/// 3. serves on `server.address:server.port` (HTTPS with `server.ssl.*`), registers with
///    the registry of `eureka.client.service-url.defaultZone`, and runs until
///    SIGINT/SIGTERM (or [`Running::shutdown`]); then marks readiness down, deregisters,
///    runs the shutdown hooks, drains in-flight requests and flushes telemetry.
///
/// # Examples
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// # #[tokio::main] async fn main() -> Result<(), msa::Error> {
/// // application.yml: spring.application.name, server.port, eureka.client.service-url...
/// msa::App::from_settings()
///     .router(Router::new().route("/hello", get(|| async { "hello" })))
///     .run()
///     .await
/// # }
/// ```
#[must_use = "an App does nothing until started"]
pub struct App {
    name: String,
    version: Option<String>,
    load: Load,
    /// Values set by builder methods, as keys.
    code: Vec<(String, Value)>,
    /// The files, environment and code, read once per change of `load` or `code`.
    local: OnceLock<Result<Settings, SettingsError>>,
    limits: Option<Limits>,
    server_tls: Option<ServerTls>,
    client_tls: Option<ClientTls>,
    router: Router,
    actuator: Actuator,
    shutdown: Shutdown,
    signals: bool,
    telemetry: Option<Option<TelemetryGuard>>,
    #[cfg(feature = "discovery")]
    discovery: Option<discovery::Shared>,
    #[cfg(feature = "discovery")]
    balancer: OnceLock<Result<Option<msa_discovery::balance::Balancer>, String>>,
    #[cfg(feature = "discovery")]
    lease: Option<(Duration, Duration)>,
    #[cfg(feature = "config")]
    config: Option<msa_config::client::ConfigClient>,
    #[cfg(feature = "breaker")]
    breakers: Option<msa_breaker::circuit_breaker::CircuitBreakerRegistry>,
    /// What the app's clients share, once one has been made.
    #[cfg(feature = "discovery")]
    clients: OnceLock<client::Clients>,
    #[cfg(feature = "stream")]
    stream: Option<stream::Wiring>,
    #[cfg(feature = "stream")]
    bridge: msa_stream::stream::StreamBridge,
    /// Properties set through Spring Cloud Bus (`busenv`), over every other source.
    #[cfg(feature = "stream")]
    overrides: bus::Overrides,
    /// The service's database, relay, projections and sagas.
    #[cfg(feature = "events")]
    events: events::Wiring,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("actuator", &self.actuator)
            .finish_non_exhaustive()
    }
}

/// The key of the application's name.
const NAME: &str = "spring.application.name";

impl App {
    /// An app called `name` (`spring.application.name`, set in code), with settings from
    /// the working directory and the environment.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut app = App::blank(name.clone(), Load::default());
        app.code.push((NAME.to_owned(), Value::String(name)));
        app
    }

    /// An app named by its settings' `spring.application.name` (as a Spring Boot
    /// application is); `application` when they do not name it.
    pub fn from_settings() -> Self {
        Self::from_load(Load::default())
    }

    /// An app named by the settings that `load` reads (other directories, an
    /// environment given in code, fixed profiles).
    pub fn from_load(load: Load) -> Self {
        let loaded = Settings::load(load.clone());
        let name = loaded
            .as_ref()
            .ok()
            .and_then(|settings| settings.get_string(NAME))
            .unwrap_or_else(|| "application".to_owned());
        let app = App::blank(name, load);
        // No code values yet: what was read is the app's settings (an error is reported
        // when the app starts).
        let _ = app.local.set(loaded);
        app
    }

    fn blank(name: String, load: Load) -> Self {
        App {
            actuator: Actuator::new(name.clone()),
            name,
            version: None,
            load,
            code: Vec::new(),
            local: OnceLock::new(),
            limits: None,
            server_tls: None,
            client_tls: None,
            router: Router::new(),
            shutdown: Shutdown::new(),
            signals: true,
            telemetry: None,
            #[cfg(feature = "discovery")]
            discovery: None,
            #[cfg(feature = "discovery")]
            balancer: OnceLock::new(),
            #[cfg(feature = "discovery")]
            lease: None,
            #[cfg(feature = "config")]
            config: None,
            #[cfg(feature = "breaker")]
            breakers: None,
            #[cfg(feature = "discovery")]
            clients: OnceLock::new(),
            #[cfg(feature = "stream")]
            stream: None,
            #[cfg(feature = "stream")]
            bridge: msa_stream::stream::StreamBridge::new(),
            #[cfg(feature = "stream")]
            overrides: bus::Overrides::default(),
            #[cfg(feature = "events")]
            events: events::Wiring::default(),
        }
    }

    /// The app's name: its service name in the registry and its application name at the
    /// config server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `key` in code, above every other source (what the builder methods do).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.code.push((key.to_owned(), value.into()));
        self.changed();
        self
    }

    /// Reads settings as `load` says (directories, environment, profiles) instead of from
    /// the working directory and the process's environment.
    pub fn load(mut self, load: Load) -> Self {
        self.load = load;
        self.changed();
        self
    }

    /// The active profiles, instead of `MSA_PROFILES_ACTIVE`, `SPRING_PROFILES_ACTIVE` or
    /// `spring.profiles.active`.
    pub fn profiles(mut self, profiles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.load.profiles = Some(profiles.into_iter().map(Into::into).collect());
        self.changed();
        self
    }

    /// Forgets what was derived from the settings, after a builder changed them.
    fn changed(&mut self) {
        self.local = OnceLock::new();
        #[cfg(feature = "discovery")]
        {
            self.balancer = OnceLock::new();
            self.update_clients(None);
        }
    }

    /// The files, environment and code values (not yet the config server's).
    fn local(&self) -> Result<&Settings, Error> {
        self.local
            .get_or_init(|| {
                let mut settings = Settings::load(self.load.clone())?;
                for (key, value) in &self.code {
                    settings.set(key, value.clone());
                }
                Ok(settings)
            })
            .as_ref()
            .map_err(|e| Error::Settings(e.clone()))
    }

    /// The app's settings as they stand: files, environment and code (the config server's
    /// properties join them when the app starts).
    pub fn settings(&self) -> Result<Settings, Error> {
        self.local().cloned()
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
        if std::env::var_os(msa_core::telemetry::RUST_LOG).is_none()
            && let Some(filter) = log_filter(self.local()?)
        {
            telemetry = telemetry.filter(filter);
        }
        self.telemetry = Some(match telemetry.init() {
            Ok(guard) => Some(guard),
            Err(TelemetryError::AlreadyInitialized) => None,
            Err(error) => return Err(error.into()),
        });
        Ok(())
    }

    /// The app's version, for `/actuator/info`, the `service.version` resource attribute
    /// and the registered instance's `version` metadata.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let version = version.into();
        self.actuator = self.actuator.version(version.clone());
        self.version = Some(version);
        self
    }

    /// The listen address, `host:port` (keys `server.address` and `server.port`; port 0
    /// picks a free port). Default `127.0.0.1:8080`: bind `0.0.0.0` to be reachable from
    /// other machines.
    pub fn bind(self, addr: impl Into<String>) -> Self {
        self.set_addr("server", addr.into())
    }

    /// Sets `{prefix}.address` and `{prefix}.port` from `host:port`; text that is not one
    /// goes to `.address`, to be reported when the app starts.
    fn set_addr(self, prefix: &str, addr: String) -> Self {
        match split_host_port(&addr) {
            Some((host, port)) => self
                .set(&format!("{prefix}.address"), host)
                .set(&format!("{prefix}.port"), Value::from(port)),
            None => self.set(&format!("{prefix}.address"), addr),
        }
    }

    /// Serves the actuator's endpoints on a listener of their own at `addr` (keys
    /// `management.server.address` and `management.server.port`): all of them there, and
    /// only the probes (`/actuator/health…`, `/actuator/info`) on the main listener. A
    /// registered instance then carries `management.port` in its metadata.
    pub fn management_bind(self, addr: impl Into<String>) -> Self {
        self.set_addr("management.server", addr.into())
    }

    /// The bounds both listeners apply: header-read and idle timeouts, the connection cap
    /// (keys `msa.server.header-read-timeout`, `.idle-timeout`, `.max-connections`).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Serves HTTPS (keys `server.ssl.certificate`, `server.ssl.certificate-private-key`,
    /// `server.ssl.trust-certificate`, `server.ssl.client-auth`).
    pub fn server_tls(mut self, tls: ServerTls) -> Self {
        self.server_tls = Some(tls);
        self
    }

    /// What the app's clients trust and present (keys `msa.client.ssl.*`): every client
    /// the app makes — [`client`](Self::client), registration, discovery and the config
    /// client — uses it.
    pub fn client_tls(mut self, tls: ClientTls) -> Self {
        self.client_tls = Some(tls);
        self.changed();
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

    /// The client TLS settings: code, else `msa.client.ssl`.
    fn client_tls_settings(&self, msa: Option<&Msa>) -> ClientTls {
        if let Some(tls) = &self.client_tls {
            return tls.clone();
        }
        msa.and_then(|m| m.client.ssl.clone()).unwrap_or_default()
    }

    /// `msa.*`, checked.
    #[cfg(any(feature = "discovery", feature = "config"))]
    fn msa(&self) -> Result<Msa, Error> {
        Ok(self.local()?.bind("msa")?)
    }

    /// A reqwest client with the app's TLS (`msa`'s, unless set in code) and `timeout`.
    #[cfg(any(feature = "discovery", feature = "config"))]
    fn http(&self, msa: &Msa, timeout: Duration) -> Result<reqwest::Client, Error> {
        let builder = self.client_tls_settings(Some(msa)).reqwest_builder()?;
        builder
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Discovery(format!("cannot build an HTTP client: {e}")))
    }

    /// Binds and starts serving in the background.
    pub async fn start(mut self) -> Result<Running, Error> {
        self.local()?;
        self.init_telemetry()?;
        msa_core::metrics::set_application(self.name.clone());
        let guard = self.telemetry.take().flatten();

        #[cfg(feature = "config")]
        let settings = self.imported().await?;
        #[cfg(not(feature = "config"))]
        let settings = self.local()?.clone();
        let msa = keys::check(&settings)?;
        #[cfg(feature = "breaker")]
        checked_resilience(&settings)?;
        #[cfg(feature = "discovery")]
        self.update_clients(Some(&settings));
        #[cfg(all(feature = "discovery", feature = "breaker", feature = "config"))]
        self.follow_resilience().await?;

        let server = ServerKeys::read(&settings)?;
        let bind = server.bind.clone();
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|source| Error::Bind {
                addr: bind.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::Serve)?;
        let management_bind = match (server.management_port, &server.management_address) {
            // The main listener's port: one listener, as in Spring Boot.
            (Some(port), None) if port == local_addr.port() => None,
            (Some(port), Some(host)) => Some(host_port(host, port)),
            (Some(port), None) => Some(SocketAddr::new(local_addr.ip(), port).to_string()),
            (None, _) => None,
        };
        let management_listener = match management_bind {
            Some(bind) => Some(
                TcpListener::bind(&bind)
                    .await
                    .map_err(|source| Error::Bind { addr: bind, source })?,
            ),
            None => None,
        };
        let management_addr = match &management_listener {
            Some(listener) => Some(listener.local_addr().map_err(Error::Serve)?),
            None => None,
        };
        // Management endpoints: the token from `msa.management.token`
        // (`MSA_MANAGEMENT_TOKEN`), or only on a loopback management listener (the main one
        // when there is no other).
        let served_on = management_addr.unwrap_or(local_addr);
        let management = match &msa.management.token {
            Some(token) if token.trim().is_empty() => {
                return Err(Error::Management(
                    "msa.management.token (MSA_MANAGEMENT_TOKEN) is set but empty".into(),
                ));
            }
            Some(token) => Management::token(served_on, token.trim()),
            None => Management::none(served_on),
        };
        let tls = match &self.server_tls {
            Some(tls) => tls.clone(),
            None => settings.bind::<ServerTls>("server.ssl")?,
        };
        let tls_config = tls.config()?;
        // A bad client CA file fails the start, not the first call.
        let client_tls = self.client_tls_settings(Some(&msa));
        client_tls.config()?;

        #[cfg(feature = "discovery")]
        let registration = {
            let http = client_tls
                .reqwest_builder()?
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| Error::Discovery(e.to_string()))?;
            let registered = discovery::Registered {
                name: &self.name,
                version: self.version.as_deref(),
                addr: local_addr,
                management_port: management_addr.map(|addr| addr.port()),
                tls: tls_config.is_some(),
                lease: self.lease,
            };
            discovery::register(&settings, registered, http, &self.shutdown)?
        };
        self.health_indicators(
            #[cfg(feature = "discovery")]
            registration.as_ref(),
        );
        self.actuator = {
            let listed = settings.clone();
            #[cfg(feature = "stream")]
            let overrides = self.overrides.clone();
            std::mem::replace(&mut self.actuator, Actuator::new("")).env_with(move || {
                #[allow(unused_mut)]
                let mut listed = listed.clone();
                #[cfg(feature = "stream")]
                overrides.add_to(&mut listed);
                listed
            })
        };
        #[cfg(feature = "discovery")]
        if let Some(registration) = &registration
            && health_to_registry(&settings)?
        {
            push_health(
                registration.clone(),
                self.actuator.health_check(),
                &self.shutdown,
            );
        }
        #[cfg(feature = "jwt")]
        if let Some(verifier) = self.jwt_verifier(&settings, &msa, &client_tls).await? {
            // The app's routes only: the actuator keeps its own rules (probes open,
            // management operations behind the management token).
            self.router =
                std::mem::take(&mut self.router).layer(msa_core::jwt::JwtLayer::new(verifier));
        }
        #[cfg(feature = "events")]
        self.start_events(&settings)?;
        #[cfg(feature = "stream")]
        self.start_stream(&settings).await?;
        let availability = self.actuator.availability();
        let app = self
            .router
            .merge(self.actuator.management(management).router())
            .layer(ServerLayer::new());

        let shutdown = self.shutdown.clone();
        // Readiness goes down first, before any hook the app added.
        shutdown.unready_first(availability.clone());
        if let Some(grace) = msa.server.shutdown_grace {
            shutdown.set_grace(grace);
        }
        if let Some(guard) = guard {
            shutdown.after_drain("telemetry", move || flush(guard));
        }
        if self.signals {
            shutdown.listen_for_signals();
        }
        let scheme = if tls_config.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(app = %self.name, addr = %local_addr, %scheme, management = ?management_addr, "started");
        let limits = self.limits.unwrap_or_else(|| server.limits(&msa));
        let serving = shutdown.clone();
        let listeners = Listeners::new(listener, app)
            .management(management_listener)
            .limits(limits)
            .tls(tls_config);
        let task = tokio::spawn(async move { serving.serve_with(listeners).await });
        Ok(Running {
            local_addr,
            management_addr,
            shutdown,
            availability,
            task,
            #[cfg(feature = "discovery")]
            registration,
        })
    }

    /// Adds the health indicators of what the app runs: the registration
    /// (`discoveryClient`), the config server (`configServer`) and the clients' circuit
    /// breakers (`circuitBreakers`). They report, and never take the app down: a registry,
    /// config server or downstream that is away is not this app's failure (they are in no
    /// health group, and report `UNKNOWN` rather than `DOWN`).
    fn health_indicators(
        &mut self,
        #[cfg(feature = "discovery")] registration: Option<
            &msa_discovery::registration::Registration,
        >,
    ) {
        use msa_core::actuator::Health;
        let mut actuator = std::mem::replace(&mut self.actuator, Actuator::new(""));
        #[cfg(feature = "discovery")]
        if let Some(registration) = registration.cloned() {
            actuator = actuator.health_indicator_in("discoveryClient", &[], move || {
                let registration = registration.clone();
                async move {
                    let instance = registration.instance();
                    let health = if registration.is_registered() {
                        Health::up()
                    } else {
                        Health::unknown().with_detail(
                            "reason",
                            "not registered yet, or the registry is unreachable",
                        )
                    };
                    health
                        .with_detail("instanceId", instance.instance_id)
                        .with_detail("status", instance.status.to_string())
                }
            });
        }
        #[cfg(all(feature = "discovery", feature = "breaker"))]
        if let Some(clients) = self.clients.get() {
            let resilience = clients.resilience.clone();
            actuator = actuator.health_indicator_in("circuitBreakers", &[], move || {
                let breakers = resilience
                    .breakers()
                    .map(|r| r.breakers())
                    .unwrap_or_default();
                async move {
                    let mut health = Health::up();
                    for (name, breaker) in breakers {
                        let m = breaker.metrics();
                        health = health.with_detail(
                            name,
                            serde_json::json!({
                                "state": m.state.as_str(),
                                "failureRate": m.failure_rate.map_or(-1.0, f64::from),
                                "slowCallRate": m.slow_call_rate.map_or(-1.0, f64::from),
                                "bufferedCalls": m.buffered_calls,
                                "failedCalls": m.buffered_failed_calls,
                                "notPermittedCalls": m.not_permitted_calls,
                            }),
                        );
                    }
                    health
                }
            });
        }
        #[cfg(feature = "config")]
        if let Ok(Some(client)) = self.config_import() {
            actuator = actuator.health_indicator_in("configServer", &[], config_health(client));
        }
        self.actuator = actuator;
    }

    /// The bearer-token check Spring's resource server keys ask for
    /// (`spring.security.oauth2.resourceserver.jwt.*`, or `msa.security.jwt.hs256-secret`),
    /// if any.
    #[cfg(feature = "jwt")]
    async fn jwt_verifier(
        &self,
        settings: &Settings,
        msa: &Msa,
        tls: &ClientTls,
    ) -> Result<Option<msa_core::jwt::JwtVerifier>, Error> {
        use msa_core::jwt::JwtVerifier;
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default, rename_all = "kebab-case")]
        struct Spring {
            issuer_uri: Option<String>,
            jwk_set_uri: Option<String>,
            public_key_location: Option<String>,
            audiences: Vec<String>,
        }
        const PREFIX: &str = "spring.security.oauth2.resourceserver.jwt";
        let spring: Spring = settings.bind::<Option<Spring>>(PREFIX)?.unwrap_or_default();
        let keys = &msa.security.jwt;
        let invalid = |key: &str, message: String| {
            let key = key.to_owned();
            Error::Settings(SettingsError {
                origin: settings.origin(&key),
                key,
                message,
            })
        };
        let http = || {
            tls.reqwest_builder()
                .map_err(Error::from)?
                .build()
                .map_err(|e| Error::Management(format!("cannot build an HTTP client: {e}")))
        };
        let verifier = if let Some(secret) = &keys.hs256_secret {
            JwtVerifier::hs256(secret)
                .map_err(|e| invalid("msa.security.jwt.hs256-secret", e.to_string()))?
        } else if let Some(uri) = &spring.jwk_set_uri {
            JwtVerifier::jwk_set_uri(uri, http()?)
                .map_err(|e| invalid(&format!("{PREFIX}.jwk-set-uri"), e.to_string()))?
        } else if let Some(location) = &spring.public_key_location {
            let path = location.strip_prefix("file:").unwrap_or(location);
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    &format!("{PREFIX}.public-key-location"),
                    format!("{path}: {e}"),
                )
            })?;
            JwtVerifier::public_key_pem(&pem)
                .map_err(|e| invalid(&format!("{PREFIX}.public-key-location"), e.to_string()))?
        } else if let Some(issuer) = &spring.issuer_uri {
            JwtVerifier::from_issuer(issuer, http()?)
                .await
                .map_err(|e| invalid(&format!("{PREFIX}.issuer-uri"), e.to_string()))?
        } else {
            return Ok(None);
        };
        let mut verifier = verifier
            .realm(self.name.clone())
            .audiences(spring.audiences);
        // With keys from elsewhere, the issuer-uri (or msa's issuer) still names `iss`.
        if let Some(issuer) = keys.issuer.clone().or(spring.issuer_uri) {
            verifier = verifier.issuer(issuer);
        }
        if let Some(leeway) = keys.leeway {
            verifier = verifier.leeway(leeway);
        }
        Ok(Some(verifier))
    }

    /// Starts the app and waits until it has shut down.
    pub async fn run(self) -> Result<(), Error> {
        self.start().await?.wait().await
    }
}

/// Whether the app's health becomes its status in the registry
/// (`eureka.client.healthcheck.enabled`; on by default).
#[cfg(feature = "discovery")]
fn health_to_registry(settings: &Settings) -> Result<bool, Error> {
    Ok(settings
        .bind::<Option<bool>>("eureka.client.healthcheck.enabled")?
        .unwrap_or(true))
}

/// Reports the app's health to the registry as the instance's status, as Spring's
/// `eureka.client.healthcheck.enabled` does: at every renewal, and within a quarter of a
/// second of a change of readiness or liveness. Stops when shutdown starts (the
/// registration's own before-drain step takes over).
#[cfg(feature = "discovery")]
fn push_health(
    registration: msa_discovery::registration::Registration,
    health: msa_core::actuator::HealthCheck,
    shutdown: &Shutdown,
) {
    use msa_core::InstanceStatus;
    use msa_core::actuator::Status;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let every = registration.renewal_interval();
        let mut reported = InstanceStatus::Up;
        let mut flags = (true, true);
        // The first evaluation is at once: an app that starts unhealthy says so.
        let mut next = tokio::time::Instant::now();
        let mut quick = tokio::time::interval(Duration::from_millis(250));
        quick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = stop.triggered();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                () = &mut stopping => return,
                _ = quick.tick() => {}
            }
            let availability = health.availability();
            let now_flags = (availability.is_live(), availability.is_ready());
            if now_flags == flags && tokio::time::Instant::now() < next {
                continue;
            }
            flags = now_flags;
            next = tokio::time::Instant::now() + every;
            let status = match health.report().await.status {
                Status::Up | Status::Unknown => InstanceStatus::Up,
                Status::Down => InstanceStatus::Down,
                Status::OutOfService => InstanceStatus::OutOfService,
            };
            if status == reported || stop.is_triggered() {
                continue;
            }
            match registration.set_status(status).await {
                Ok(()) => {
                    tracing::info!(%status, "health reported to the registry");
                    reported = status;
                }
                Err(error) => tracing::warn!(%error, "health not reported to the registry"),
            }
        }
    });
}

/// The config server's health: `UP` with the sources it serves, `UNKNOWN` when it does
/// not answer (the app runs on what it has). Asked at most once a minute.
#[cfg(feature = "config")]
fn config_health(
    client: msa_config::client::ConfigClient,
) -> impl msa_core::actuator::HealthIndicator {
    use msa_core::actuator::Health;
    use std::sync::{Arc, Mutex};
    type Last = Option<(tokio::time::Instant, Health)>;
    let last: Arc<Mutex<Last>> = Arc::default();
    move || {
        let client = client.clone();
        let last = last.clone();
        async move {
            if let Some((at, health)) = &*msa_core::sync::lock(&last)
                && at.elapsed() < Duration::from_secs(60)
            {
                return health.clone();
            }
            let health = match client.fetch_once().await {
                Ok(fetched) => {
                    let sources: Vec<String> = fetched
                        .environment
                        .property_sources
                        .iter()
                        .map(|s| msa_core::secrets::mask_url(&s.name))
                        .collect();
                    Health::up()
                        .with_detail("propertySources", sources)
                        .with_detail("version", fetched.environment.version)
                }
                Err(error) => Health::unknown().with_detail("error", error.to_string()),
            };
            *msa_core::sync::lock(&last) = Some((tokio::time::Instant::now(), health.clone()));
            health
        }
    }
}

/// `host:port` split (`[::1]:80` too); `None` when it is not that.
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// The listener settings: `server.*`, `management.server.*`.
#[derive(Debug)]
struct ServerKeys {
    bind: String,
    management_port: Option<u16>,
    management_address: Option<String>,
}

/// `host:port` to bind: an IP address (IPv6 in brackets) or a host name, as Spring's
/// `server.address` takes either.
fn host_port(host: &str, port: u16) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

impl ServerKeys {
    fn read(settings: &Settings) -> Result<ServerKeys, Error> {
        let address: String = settings
            .bind::<Option<String>>("server.address")?
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port: u16 = settings.bind::<Option<u16>>("server.port")?.unwrap_or(8080);
        let management_port = settings.bind::<Option<u16>>("management.server.port")?;
        let management_address = settings.bind::<Option<String>>("management.server.address")?;
        Ok(ServerKeys {
            bind: host_port(&address, port),
            management_port,
            management_address,
        })
    }

    fn limits(&self, msa: &Msa) -> Limits {
        let defaults = Limits::default();
        Limits {
            header_read_timeout: msa
                .server
                .header_read_timeout
                .unwrap_or(defaults.header_read_timeout),
            idle_timeout: msa.server.idle_timeout.unwrap_or(defaults.idle_timeout),
            max_connections: msa
                .server
                .max_connections
                .unwrap_or(defaults.max_connections),
        }
    }
}

/// `logging.level.*` as a log filter: `root` is the default level, every other key a
/// target (`logging.level.msa_discovery: debug`; dots read as `::`).
fn log_filter(settings: &Settings) -> Option<String> {
    let level = |text: &str| match text.trim().to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        other => other.to_owned(),
    };
    let mut directives = Vec::new();
    if let Some(root) = settings.get_string("logging.level.root") {
        directives.push(level(&root));
    }
    for (key, _) in settings.keys("logging.level") {
        // After `logging.level.`, however it is spelled (the key compares relaxed).
        let Some(target) = key.splitn(3, '.').nth(2) else {
            continue;
        };
        if target.eq_ignore_ascii_case("root") {
            continue;
        }
        if let Some(value) = settings.get_string(&key) {
            directives.push(format!("{}={}", target.replace('.', "::"), level(&value)));
        }
    }
    (!directives.is_empty()).then(|| directives.join(","))
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
    #[cfg(feature = "discovery")]
    registration: Option<msa_discovery::registration::Registration>,
}

impl Running {
    /// The app's registration with the registry, when it registers: to set its status
    /// (`set_status(InstanceStatus::OutOfService)`) or metadata while it runs.
    #[cfg(feature = "discovery")]
    pub fn registration(&self) -> Option<&msa_discovery::registration::Registration> {
        self.registration.as_ref()
    }

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

/// Discovery: register with a registry and call other services by name.
#[cfg(feature = "discovery")]
impl App {
    /// Registers the app with the registry at `url` once it listens, renews its lease
    /// while it runs and deregisters when it stops; and discovers other services through
    /// it for [`client`](Self::client) and [`balancer`](Self::balancer), so a call to
    /// `http://inventory/...` goes to an `UP` instance of `inventory`
    /// (key `eureka.client.service-url.defaultZone`).
    ///
    /// `url` is written as Spring users write it — `http://host:8761`,
    /// `http://host:8761/eureka/` — or several, comma-separated, tried in turn. With
    /// msa-registry, callers follow its watch and hear of changes within milliseconds; with
    /// a Eureka server without the watch (Spring's), they follow its delta.
    pub fn registry(self, url: impl Into<String>) -> Self {
        self.set("eureka.client.service-url.defaultZone", url.into())
    }

    /// Finds other services' instances through `discovery` instead of the backend the
    /// settings choose (`msa.discovery.type`).
    pub fn discovery(mut self, discovery: impl msa_discovery::discovery::Discovery) -> Self {
        self.discovery = Some(discovery::Shared(Arc::new(discovery)));
        self.changed();
        self
    }

    /// The host other services reach this app at (key `eureka.instance.hostname`; by
    /// default the bound address, or when bound to all interfaces the first non-loopback
    /// interface address).
    pub fn advertise(self, host: impl Into<String>) -> Self {
        self.set("eureka.instance.hostname", host.into())
    }

    /// The zone the instance registers in (key `eureka.instance.metadata-map.zone`); its
    /// balancer prefers instances of the same zone.
    pub fn zone(self, zone: impl Into<String>) -> Self {
        self.set("eureka.instance.metadata-map.zone", zone.into())
    }

    /// How often the lease is renewed and how long it lasts unrenewed (keys
    /// `eureka.instance.lease-renewal-interval-in-seconds` and
    /// `…lease-expiration-duration-in-seconds`; default 10 s and 30 s).
    pub fn lease(mut self, renewal: Duration, lease: Duration) -> Self {
        self.lease = Some((renewal, lease));
        self
    }

    /// The load balancer over the discovered instances (`msa.loadbalancer.*`), to wrap
    /// hyper or tonic clients in; `None` without discovery. Discovery settings are read
    /// from files, the environment and code.
    pub fn balancer(&self) -> Option<msa_discovery::balance::Balancer> {
        let made = self.balancer.get_or_init(|| {
            let settings = self.local().map_err(|e| e.to_string())?;
            let msa = self.msa().map_err(|e| e.to_string())?;
            let backend = match &self.discovery {
                Some(backend) => Some(backend.clone()),
                None => {
                    let http = self
                        .http(&msa, Duration::from_secs(40))
                        .map_err(|e| e.to_string())?;
                    discovery::backend(settings, &msa, http).map_err(|e| e.to_string())?
                }
            };
            let Some(backend) = backend else {
                return Ok(None);
            };
            let mut config: msa_discovery::balance::BalancerConfig = settings
                .bind::<Option<_>>("msa.loadbalancer")
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if config.zone.is_none() {
                config.zone = discovery::own_zone(settings);
            }
            Ok(Some(msa_discovery::balance::Balancer::new(backend, config)))
        });
        match made {
            Ok(balancer) => balancer.clone(),
            Err(reason) => {
                tracing::error!(%reason, "no discovery: the settings do not read");
                None
            }
        }
    }

    /// An HTTP client for calls to other services, as Spring's `@LoadBalanced` clients
    /// with Resilience4j:
    ///
    /// - it continues the current trace (`traceparent`), records a client span and
    ///   `http_client_requests_seconds`;
    /// - `lb://<service>/...`, and `http://<service>/...` where `<service>` is a service
    ///   discovery knows, go to one of the service's `UP` instances (the caller's zone
    ///   first); every other URL (`https://api.example.com`) goes out as it is;
    /// - each call passes through the Resilience4j stack that `resilience4j.*` names for its
    ///   target (`resilience4j.retry.instances.payments`, ...; `configs.default`
    ///   otherwise), in Spring's order **Retry → CircuitBreaker → RateLimiter → TimeLimiter
    ///   → Bulkhead**: a circuit breaker always, the other layers when their section is set.
    ///   A retry goes to another instance while one is left, within the retry budget.
    ///   Settings follow the config server live (and `POST /actuator/refresh`).
    ///
    /// TLS as [`client_tls`](Self::client_tls) says; each attempt times out after
    /// `msa.client.timeout` (10 s) at most. Every client an app makes, and every clone,
    /// shares one connection pool, balancer and set of breakers; builder calls made after
    /// this one apply to it too.
    pub fn client(&self) -> reqwest_middleware::ClientWithMiddleware {
        self.clients().client()
    }

    /// The shared client parts, made from the settings the first time.
    fn clients(&self) -> &client::Clients {
        self.clients.get_or_init(|| {
            let clients = client::Clients::new(
                self.client_http(),
                #[cfg(feature = "breaker")]
                self.resilience(None),
            );
            clients.set_balancer(self.balancer());
            clients
        })
    }

    /// The pool the clients send through: the app's TLS, `msa.client.timeout`.
    fn client_http(&self) -> reqwest::Client {
        self.msa()
            .and_then(|msa| {
                let timeout = msa.client.timeout.unwrap_or(Duration::from_secs(10));
                self.http(&msa, timeout)
            })
            .unwrap_or_else(|error| {
                // `start` fails on the same error, naming it.
                tracing::error!(%error, "the client's settings do not read; using defaults");
                reqwest::Client::new()
            })
    }

    /// Brings the clients made so far up to date with the app's settings (`settings`,
    /// else the local ones).
    fn update_clients(&self, settings: Option<&Settings>) {
        let Some(clients) = self.clients.get() else {
            return;
        };
        clients.set_http(self.client_http());
        clients.set_balancer(self.balancer());
        #[cfg(feature = "breaker")]
        {
            let fresh = self.resilience(settings);
            if let Err(error) = clients.resilience.update((*fresh.config()).clone()) {
                tracing::error!(%error, "resilience4j settings not applied");
            }
        }
        #[cfg(not(feature = "breaker"))]
        let _ = settings;
    }
}

/// Resilience: the stacks [`App::client`] guards calls with.
#[cfg(feature = "breaker")]
impl App {
    /// The stacks `resilience4j.*` describes (Resilience4j's keys, as Spring writes them),
    /// with a circuit breaker for every target even when `resilience4j.circuitbreaker` is
    /// absent; Resilience4j's defaults when they do not read (logged: `start` fails on it).
    fn resilience(&self, settings: Option<&Settings>) -> msa_breaker::stack::Resilience {
        use msa_breaker::stack::Resilience;
        let read = || -> Result<Resilience, String> {
            let local;
            let settings = match settings {
                Some(settings) => settings,
                None => {
                    local = self.local().map_err(|e| e.to_string())?;
                    local
                }
            };
            checked_resilience(settings).map_err(|e| e.to_string())
        };
        let resilience = read().unwrap_or_else(|error| {
            tracing::error!(%error, "resilience4j settings do not read; using Resilience4j's defaults");
            Resilience::new(resilience_defaults())
                .unwrap_or_else(|_| unreachable!("the default sections are valid"))
        });
        match &self.breakers {
            Some(registry) => resilience.with_breakers(registry.clone()),
            None => resilience,
        }
    }

    /// The circuit breakers for [`client`](Self::client)'s calls, one per target name,
    /// instead of those `resilience4j.circuitbreaker` describes (also for clients made
    /// before this call).
    pub fn circuit_breakers(
        mut self,
        registry: msa_breaker::circuit_breaker::CircuitBreakerRegistry,
    ) -> Self {
        self.breakers = Some(registry);
        self.changed();
        self
    }
}

/// `resilience4j.*` as the client stacks' settings: a circuit breaker for every target.
#[cfg(feature = "breaker")]
fn resilience_config(settings: &Settings) -> Result<msa_breaker::stack::ResilienceConfig, Error> {
    let mut config: msa_breaker::stack::ResilienceConfig = settings
        .bind::<Option<_>>("resilience4j")?
        .unwrap_or_default();
    config.circuitbreaker.get_or_insert_with(Default::default);
    Ok(config)
}

/// The stacks `resilience4j.*` describes, every instance checked; an error names the key
/// and where it was set.
#[cfg(feature = "breaker")]
fn checked_resilience(settings: &Settings) -> Result<msa_breaker::stack::Resilience, Error> {
    let config = resilience_config(settings)?;
    msa_breaker::stack::Resilience::new(config).map_err(|error| {
        let key = format!("resilience4j.{}", error.path);
        Error::Settings(SettingsError {
            origin: settings.origin(&key),
            key,
            message: error.reason,
        })
    })
}

#[cfg(feature = "breaker")]
fn resilience_defaults() -> msa_breaker::stack::ResilienceConfig {
    msa_breaker::stack::ResilienceConfig {
        circuitbreaker: Some(Default::default()),
        ..Default::default()
    }
}

/// Central configuration: read from a config server, kept live.
#[cfg(feature = "config")]
impl App {
    /// Reads the app's configuration from the config server at `uri` (msa-config-server
    /// or Spring Cloud Config Server; key `msa.config.uri`, or
    /// `spring.config.import: "configserver:<uri>"`).
    pub fn config_server(self, uri: impl Into<String>) -> Self {
        self.set("msa.config.uri", uri.into())
    }

    /// Reads the app's configuration with `client` (profiles, label, credentials, a
    /// last-known-good cache file, fail-fast), instead of one made from the settings.
    pub fn config_client(mut self, client: msa_config::client::ConfigClient) -> Self {
        self.config = Some(client);
        self
    }

    /// The config client the settings describe, if they ask for a config server.
    fn config_import(&self) -> Result<Option<msa_config::client::ConfigClient>, Error> {
        if let Some(client) = &self.config {
            return Ok(Some(client.clone()));
        }
        let settings = self.local()?;
        let msa = self.msa()?;
        config_import(settings, &msa.config, &self.name, |timeout| {
            self.http(&msa, timeout)
        })
    }

    /// The settings with the config server's properties, when the settings ask for one.
    async fn imported(&mut self) -> Result<Settings, Error> {
        let mut settings = self.local()?.clone();
        if let Some(client) = self.config_import()?
            && let Some(fetched) = client.initial().await?
        {
            let origin = format!("config server {}", fetched.environment.name);
            settings.add_properties(Layer::Remote, &origin, fetched.environment.merged());
        }
        Ok(settings)
    }

    /// `client`'s configuration, live, laid over the local settings and read by `read`.
    async fn live_over_local<T, F>(
        &self,
        client: &msa_config::client::ConfigClient,
        read: F,
    ) -> Result<msa_config::client::LiveConfig<T>, Error>
    where
        T: Send + Sync + 'static,
        F: Fn(&Settings) -> Result<T, String> + Send + Sync + 'static,
    {
        let base = self.local()?.clone();
        #[cfg(feature = "stream")]
        let overrides = self.overrides.clone();
        let live = client
            .live_with(move |server| {
                let mut settings = base.clone();
                settings.add_properties(
                    Layer::Remote,
                    server.origin(),
                    server.properties().iter().cloned(),
                );
                #[cfg(feature = "stream")]
                overrides.add_to(&mut settings);
                read(&settings)
            })
            .await?;
        #[cfg(feature = "stream")]
        self.overrides.on_change(live.rebuilder());
        Ok(live)
    }

    /// Keeps the clients' resilience stacks in step with the config server (and
    /// `POST /actuator/refresh`), when the app has clients and a config server.
    #[cfg(all(feature = "discovery", feature = "breaker"))]
    async fn follow_resilience(&mut self) -> Result<(), Error> {
        let (Some(clients), Some(client)) = (self.clients.get().cloned(), self.config_import()?)
        else {
            return Ok(());
        };
        let live = self
            .live_over_local(&client, |settings| {
                resilience_config(settings).map_err(|e| e.to_string())
            })
            .await?;
        let hook = live.refresh_hook();
        self.actuator = std::mem::replace(&mut self.actuator, Actuator::new(""))
            .on_refresh("resilience4j", hook);
        let mut changes = live.subscribe();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            let _live = live;
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = stop.triggered() => return,
                }
                let config = (**changes.borrow_and_update()).clone();
                match clients.resilience.update(config) {
                    Ok(()) => tracing::info!("resilience4j settings applied"),
                    Err(error) => {
                        tracing::error!(%error, "resilience4j settings rejected; the last good ones stay")
                    }
                }
            }
        });
        Ok(())
    }

    /// The app's settings as a live `T` (bound from the root: `T`'s fields are top-level
    /// keys): files, the config server's properties and the environment with relaxed
    /// binding (`ORDERS_MAX_QUANTITY` is `orders.max-quantity`), rebuilt within
    /// milliseconds of a change at the server, and again on `POST /actuator/refresh`. A
    /// change that does not bind to `T` is logged and the last good value kept.
    ///
    /// The config server is the one the settings import (`spring.config.import`,
    /// `msa.config.uri`) or [`config_server`](Self::config_server) names; without one,
    /// Spring's default `http://localhost:8888` is asked.
    pub async fn live_config<T>(&mut self) -> Result<msa_config::client::LiveConfig<T>, Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.init_telemetry()?;
        let client = match self.config_import()? {
            Some(client) => client,
            None => {
                let client = msa_config::client::ConfigClient::new(self.name.clone())
                    .http_client(self.http(&self.msa()?, Duration::from_secs(60))?);
                self.config = Some(client.clone());
                client
            }
        };
        let live = self
            .live_over_local(&client, |settings| {
                settings.bind::<T>("").map_err(|e| e.to_string())
            })
            .await?;
        let hook = live.refresh_hook();
        self.actuator =
            std::mem::replace(&mut self.actuator, Actuator::new("")).on_refresh("config", hook);
        Ok(live)
    }
}

/// The config client `spring.config.import` (or `msa.config.uri`) asks for: the server's
/// URI, the application name, the active profiles and label, credentials, fail-fast (an
/// import without `optional:`), and the cache file.
#[cfg(feature = "config")]
fn config_import(
    settings: &Settings,
    keys: &keys::ConfigKeys,
    name: &str,
    http: impl Fn(Duration) -> Result<reqwest::Client, Error>,
) -> Result<Option<msa_config::client::ConfigClient>, Error> {
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    struct Spring {
        enabled: Option<bool>,
        uri: Option<String>,
        label: Option<String>,
        profile: Option<String>,
        name: Option<String>,
        username: Option<String>,
        password: Option<String>,
        fail_fast: Option<bool>,
        retry: Option<Retry>,
    }
    /// Spring's `spring.cloud.config.retry.*` (its defaults: 6 attempts from 1 s, ×1.1, at
    /// most 2 s).
    #[derive(Debug, serde::Deserialize)]
    #[serde(default, rename_all = "kebab-case")]
    struct Retry {
        max_attempts: u32,
        #[serde(with = "msa_core::duration")]
        initial_interval: Duration,
        multiplier: f64,
        #[serde(with = "msa_core::duration")]
        max_interval: Duration,
    }
    impl Default for Retry {
        fn default() -> Self {
            Retry {
                max_attempts: 6,
                initial_interval: Duration::from_secs(1),
                multiplier: 1.1,
                max_interval: Duration::from_secs(2),
            }
        }
    }
    let spring: Spring = settings.bind("spring.cloud.config")?;
    if keys.enabled.or(spring.enabled) == Some(false) {
        return Ok(None);
    }
    let imports: Vec<String> = settings
        .bind::<Option<Vec<String>>>("spring.config.import")?
        .unwrap_or_default();
    let mut from_import: Option<(Option<String>, bool)> = None;
    for import in &imports {
        let (optional, location) = match import.strip_prefix("optional:") {
            Some(rest) => (true, rest),
            None => (false, import.as_str()),
        };
        match location.strip_prefix("configserver:") {
            Some(uri) => {
                let uri = (!uri.trim().is_empty()).then(|| uri.trim().to_owned());
                from_import = Some((uri, !optional));
            }
            None => {
                return Err(Error::Settings(SettingsError {
                    key: "spring.config.import".into(),
                    origin: settings.origin("spring.config.import"),
                    message: format!("{import:?}: msa imports `configserver:` locations only"),
                }));
            }
        }
    }
    let uri = keys
        .uri
        .clone()
        .or_else(|| from_import.as_ref().and_then(|(uri, _)| uri.clone()))
        .or(spring.uri.clone());
    let wanted = from_import.is_some() || keys.uri.is_some();
    if !wanted {
        return Ok(None);
    }
    let uri = uri.unwrap_or_else(|| msa_config::client::DEFAULT_URI.to_owned());
    let fail_fast = keys
        .fail_fast
        .or(spring.fail_fast)
        .unwrap_or(from_import.is_some_and(|(_, required)| required));
    let profiles = keys.profile.clone().or(spring.profile).unwrap_or_else(|| {
        match settings.active_profiles() {
            [] => "default".to_owned(),
            active => active.join(","),
        }
    });
    let application = keys.name.clone().or(spring.name).unwrap_or(name.to_owned());
    let mut client = msa_config::client::ConfigClient::new(application)
        .uri_list(&uri)
        .profiles(profiles)
        .fail_fast(fail_fast)
        .http_client(http(Duration::from_secs(60))?);
    if let Some(label) = keys.label.clone().or(spring.label) {
        client = client.label(label);
    }
    if let (Some(user), Some(password)) = (
        keys.username.clone().or(spring.username),
        keys.password.clone().or(spring.password),
    ) {
        client = client.basic_auth(user, password);
    }
    if let Some(file) = &keys.cache_file {
        client = client.cache_file(file.clone());
    }
    if let Some(retry) = spring.retry {
        client = client.retry(
            retry.max_attempts,
            retry.initial_interval,
            retry.multiplier,
            retry.max_interval,
        );
    }
    Ok(Some(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_to_bind_are_ips_or_host_names() {
        assert_eq!(host_port("0.0.0.0", 80), "0.0.0.0:80");
        assert_eq!(host_port("[::1]", 80), "[::1]:80");
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("localhost", 80), "localhost:80");
    }

    #[test]
    fn host_and_port_split_as_written() {
        assert_eq!(split_host_port("0.0.0.0:80"), Some(("0.0.0.0".into(), 80)));
        assert_eq!(split_host_port("[::1]:9090"), Some(("::1".into(), 9090)));
        assert_eq!(split_host_port("nope"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[test]
    fn logging_levels_become_the_log_filter() {
        let mut settings = Settings::new();
        settings
            .add_yaml(
                "application.yml",
                "logging:\n  level:\n    root: WARN\n    msa_discovery: DEBUG\n    tower_http.trace: fatal\nlog_ging.Level.ä: info\n",
            )
            .unwrap();
        assert_eq!(
            log_filter(&settings).as_deref(),
            Some("warn,msa_discovery=debug,tower_http::trace=error,ä=info")
        );
        assert_eq!(log_filter(&Settings::new()), None);
    }
}
