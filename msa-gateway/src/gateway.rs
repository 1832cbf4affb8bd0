//! The [`Gateway`]: its routes, upstream clients and balancer, and their reloads (by call,
//! from the file, or by watching it); the admin routes under `/actuator/gateway`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, Response};
use msa_breaker::circuit_breaker::CircuitBreakerRegistry;
use msa_core::sync::{lock, read, write};
use msa_discovery::balance::Balancer;
use msa_discovery::discovery::{EurekaDiscovery, RegistryDiscovery, StaticDiscovery};

use crate::config::{ConfigError, GatewayConfig};
use crate::filter::Filters;
use crate::h1::server::{RawRequest, Reply};
use crate::route::{RouteTable, Target};

/// The gateway: routes, clients and the balancer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub(crate) state: Arc<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) table: RwLock<Arc<RouteTable>>,
    /// The access log, when the file turns it on.
    pub(crate) access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    pub(crate) max_header_size: usize,
    /// `server.max-connections-per-upstream`, shared out among the workers.
    pub(crate) max_connections_per_thread: usize,
    pub(crate) balancer: Option<Balancer>,
    pub(crate) metrics: crate::observe::metrics::Metrics,
    /// How `https://` upstreams are verified.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// TLS for clients (`server.ssl`), when the gateway terminates it.
    pub(crate) termination: Option<Arc<crate::tls::Termination>>,
    /// CircuitBreaker filters' breakers, by name, kept across reloads.
    pub(crate) breakers: CircuitBreakerRegistry,
    /// The team's own filters, for every build of the routes.
    pub(crate) filters: Filters,
    /// The services discovery knows (for `discovery.locator`'s routes), and the
    /// configuration last applied, to build the routes again when they change; `applied`
    /// is held while a table is built and installed (then `services`, if both).
    pub(crate) services: Mutex<Vec<String>>,
    pub(crate) applied: Mutex<GatewayConfig>,
    /// Unique per gateway in the process (for per-thread caches).
    pub(crate) id: u64,
    /// Bumped on every reload, so threads refresh their cached table.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    /// The file routes are reloaded from.
    pub(crate) file: Mutex<Option<std::path::PathBuf>>,
    /// Who may list and refresh the routes.
    pub(crate) management: Mutex<msa_core::management::Management>,
}

thread_local! {
    /// This thread's handle on the route table: (gateway, generation, table). The outer
    /// `Arc` is this thread's own, so the count a request takes is never written by
    /// another core; the shared inner one is cloned once per reload.
    static TABLE: std::cell::RefCell<Option<(u64, u64, Arc<ThreadTable>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One worker thread's hold on the shared route table (see `TABLE`).
#[derive(Debug)]
pub(crate) struct ThreadTable(Arc<RouteTable>);

impl std::ops::Deref for ThreadTable {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.0
    }
}

/// Builds the routes again whenever the set of services in `catalog` changes, until the
/// gateway is dropped.
fn follow_catalog(
    state: std::sync::Weak<State>,
    mut catalog: tokio::sync::watch::Receiver<msa_discovery::discovery::Catalog>,
) {
    tokio::spawn(async move {
        loop {
            let services: Vec<String> = catalog
                .borrow_and_update()
                .iter()
                .filter(|(_, instances)| !instances.is_empty())
                .map(|(service, _)| service.clone())
                .collect();
            let Some(state) = state.upgrade() else { return };
            let gateway = Gateway { state };
            if *lock(&gateway.state.services) != services {
                gateway.discovered(services);
            }
            drop(gateway);
            if catalog.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Logs the file's warnings (Spring keys msa does not implement), each once per process.
fn report(warnings: &[ConfigError]) {
    for warning in warnings {
        let key = format!("msa-gateway:{}:{}", warning.file, warning.key);
        if msa_core::sync::first_time(&key) {
            tracing::warn!("{warning}");
        }
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Gateway {
    /// A gateway serving `config`'s routes; the first mistake in them is the error.
    pub fn new(config: &GatewayConfig) -> Result<Self, ConfigError> {
        Self::with_filters(config, Filters::new())
    }

    /// A gateway serving `config`'s routes, whose files may also name the filters in
    /// `filters` (and every route runs its global filters); the first mistake in the
    /// routes is the error.
    pub fn with_filters(config: &GatewayConfig, filters: Filters) -> Result<Self, ConfigError> {
        let breakers = CircuitBreakerRegistry::new(config.resilience.circuit_breaker.clone())
            .map_err(|e| {
                config
                    .source
                    .error("resilience4j.circuitbreaker", e.to_string())
            })?;
        report(&config.warnings);
        let discovery = &config.discovery;
        let locator = discovery.locator.enabled;
        let dynamic = discovery.registry.is_some() || discovery.eureka.is_some();
        if locator && dynamic && tokio::runtime::Handle::try_current().is_err() {
            return Err(config.source.error(
                "discovery.locator.enabled",
                "following discovery needs the gateway built inside a tokio runtime",
            ));
        }
        // The catalog of services, followed when the locator makes routes from it.
        let mut catalog = None;
        let mut services = Vec::new();
        let balancer = if let Some(registry) = &discovery.registry {
            let registry = RegistryDiscovery::new(registry);
            catalog = locator.then(|| registry.catalog());
            Some(Balancer::new(registry, discovery.balancer.clone()))
        } else if let Some(eureka) = &discovery.eureka {
            let eureka = EurekaDiscovery::new(eureka);
            catalog = locator.then(|| eureka.catalog());
            Some(Balancer::new(eureka, discovery.balancer.clone()))
        } else if !discovery.instances.is_empty() {
            if locator {
                services = discovery
                    .instances
                    .iter()
                    .map(|i| i.service.clone())
                    .collect();
                services.sort();
                services.dedup();
            }
            Some(Balancer::new(
                StaticDiscovery::new(discovery.instances.clone()),
                discovery.balancer.clone(),
            ))
        } else {
            None
        };
        let table = RouteTable::build(config, &breakers, &filters, &services)?;
        let tls = Arc::new(
            crate::client::tls::tls_config(&config.server)
                .map_err(|(key, e)| config.source.error(key, e))?,
        );
        let termination = crate::tls::Termination::from_config(config)?;
        if balancer.is_none() && locator {
            return Err(config.source.error(
                "discovery.locator.enabled",
                "routes from discovery need a `discovery` section (registry, eureka or instances)",
            ));
        }
        if balancer.is_none()
            && let Some(route) = table
                .routes
                .iter()
                .find(|r| matches!(r.target, Target::Lb(_)))
        {
            return Err(config.source.error(
                &route.definition.key("uri"),
                "lb:// needs a `discovery` section (registry, eureka or instances)",
            ));
        }
        let management = msa_core::management::Management::from_settings(config.server.bind, None)
            .map_err(|e| config.source.error("", e))?;
        let access_log = crate::observe::access_log::AccessLog::open(&config.access_log)
            .map_err(|e| ConfigError {
                file: config.source.file.clone(),
                line: None,
                key: "msa.gateway.access-log.path".into(),
                message: format!("cannot open: {e}"),
            })?
            .map(Arc::new);
        let gateway = Gateway {
            state: Arc::new(State {
                table: RwLock::new(Arc::new(table)),
                max_header_size: config.server.max_header_size,
                max_connections_per_thread: config
                    .server
                    .max_connections_per_upstream
                    .div_ceil(config.server.workers())
                    .max(1),
                balancer,
                metrics: crate::observe::metrics::Metrics::new(),
                tls,
                termination,
                breakers,
                filters,
                services: Mutex::new(services),
                applied: Mutex::new(config.clone()),
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                generation: std::sync::atomic::AtomicU64::new(0),
                file: Mutex::default(),
                management: Mutex::new(management),
                access_log,
            }),
        };
        if let Some(catalog) = catalog {
            follow_catalog(Arc::downgrade(&gateway.state), catalog);
        }
        Ok(gateway)
    }

    /// Swaps in `config`'s routes; in-flight requests finish on the routes they matched.
    /// A bad config changes nothing.
    pub fn reload(&self, config: &GatewayConfig) -> Result<usize, ConfigError> {
        // Held until the table is installed: a rebuild for discovery's services waits, so
        // neither installs a table built from the other's stale half.
        let mut applied = lock(&self.state.applied);
        let services = lock(&self.state.services).clone();
        let table =
            RouteTable::build(config, &self.state.breakers, &self.state.filters, &services)?;
        // Last: a file whose routes fail leaves the breakers as they were.
        let section = config.resilience.circuit_breaker.clone();
        self.state.breakers.update(section).map_err(|e| {
            config
                .source
                .error("resilience4j.circuitbreaker", e.to_string())
        })?;
        report(&config.warnings);
        *applied = config.clone();
        Ok(self.install(table))
    }

    /// Serves `table` from now on; its route count.
    fn install(&self, table: RouteTable) -> usize {
        let count = table.routes.len();
        *write(&self.state.table) = Arc::new(table);
        self.state
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        count
    }

    /// The routes built again for `services` (discovery's catalog changed).
    fn discovered(&self, services: Vec<String>) {
        // Held until the table is installed (see `reload`).
        let config = lock(&self.state.applied);
        let built = RouteTable::build(
            &config,
            &self.state.breakers,
            &self.state.filters,
            &services,
        );
        match built {
            Ok(table) => {
                *lock(&self.state.services) = services;
                let count = self.install(table);
                tracing::info!(routes = count, "routes rebuilt for discovery's services");
            }
            Err(error) => tracing::warn!(%error, "routes from discovery were not rebuilt"),
        }
    }

    /// Who may call `/actuator/gateway/*` (the routes reveal filter settings; refresh
    /// changes them): by default, a token from `MSA_MANAGEMENT_TOKEN` if set, else only a
    /// listener bound to a loopback address, judged by the file's `server.bind`. Set it
    /// for the address the gateway is served on, before [`admin_router`](Self::admin_router).
    pub fn with_management(self, management: msa_core::management::Management) -> Self {
        *lock(&self.state.management) = management;
        self
    }

    pub(crate) fn management(&self) -> msa_core::management::Management {
        lock(&self.state.management).clone()
    }

    /// Remembers the file [`reload_file`](Self::reload_file) reads.
    pub fn with_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        *lock(&self.state.file) = Some(path.into());
        self
    }

    /// Reads the file again and swaps its routes in; on any mistake the old routes stay
    /// and the error says why.
    pub fn reload_file(&self) -> Result<usize, ConfigError> {
        let path = lock(&self.state.file).clone();
        let Some(path) = path else {
            return Err(ConfigError {
                file: String::new(),
                line: None,
                key: String::new(),
                message: "the gateway was not started from a file".into(),
            });
        };
        let config = GatewayConfig::load(&path)?;
        self.reload(&config)
    }

    /// The file routes come from, if any.
    pub fn file(&self) -> Option<std::path::PathBuf> {
        lock(&self.state.file).clone()
    }

    /// Reloads the routes whenever the file given to [`with_file`](Self::with_file)
    /// changes, and the TLS certificates whenever their files do (checked every `every`; a change is applied once the file has stayed the
    /// same for one check), in a task on the current tokio runtime; a bad file
    /// keeps the routes running and is logged with its `file:line: key`. The task ends
    /// when every clone of the gateway is dropped.
    pub fn watch_file(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let state = Arc::downgrade(&self.state);
        let stamp = |path: &std::path::Path| -> Option<(std::time::SystemTime, u64)> {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut applied = self.file().and_then(|path| stamp(&path));
        // A change seen once is read only when the next look finds the file as it was:
        // an editor that truncates and then writes would otherwise be caught half-way,
        // with a file that may parse (even as no routes at all).
        let mut changing = None;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(state) = state.upgrade() else { return };
                let gateway = Gateway { state };
                if let Some(termination) = &gateway.state.termination {
                    match termination.reload_if_changed() {
                        None => {}
                        Some(Ok(())) => tracing::info!("TLS certificates reloaded"),
                        Some(Err(error)) => tracing::warn!(
                            %error,
                            "the new TLS certificates were rejected; the old ones stay"
                        ),
                    }
                }
                let Some(path) = gateway.file() else { continue };
                let now = stamp(&path);
                if now == applied {
                    changing = None;
                    continue;
                }
                if changing != Some(now) {
                    changing = Some(now);
                    continue;
                }
                changing = None;
                applied = now;
                match gateway.reload_file() {
                    Ok(count) => tracing::info!(routes = count, "routes reloaded"),
                    Err(error) => tracing::warn!(
                        %error,
                        "the new routes file was rejected; the old routes stay"
                    ),
                }
            }
        })
    }

    pub(crate) fn table(&self) -> Arc<RouteTable> {
        read(&self.state.table).clone()
    }

    /// The current routes, cached per thread until a reload changes the generation.
    pub(crate) fn current_table(&self) -> Arc<ThreadTable> {
        let generation = self
            .state
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        TABLE.with(|cached| {
            let mut cached = cached.borrow_mut();
            match &*cached {
                Some((gateway, seen, table))
                    if *seen == generation && *gateway == self.state.id =>
                {
                    table.clone()
                }
                _ => {
                    let table = Arc::new(ThreadTable(self.table()));
                    *cached = Some((self.state.id, generation, table.clone()));
                    table
                }
            }
        })
    }

    /// The TLS clients are served with, when the gateway terminates it.
    pub(crate) fn termination(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.state.termination.as_ref().map(|t| t.config())
    }

    /// The largest request header accepted (`server.max-header-size`).
    pub(crate) fn max_header_size(&self) -> usize {
        self.state.max_header_size
    }

    /// Serves one request from `remote`.
    // Not an `async fn`: that would wrap the request's future in one more of the same size,
    // moved whole when it is created.
    pub fn handle(
        &self,
        request: Request<Body>,
        remote: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + '_ {
        self.dispatch(request, remote, 0)
    }

    /// Serves one request from the gateway's own HTTP/1.1 loop, as it arrived.
    ///
    /// A request for a route that only needs its target (a plain `http://` upstream, no
    /// filter but path and query rewrites, and no route that matches on headers) is
    /// forwarded with its header lines as they came, less the hop-by-hop ones, and the
    /// upstream's answer comes back the same way: no header map is built either way.
    /// Everything else is served as [`handle`](Self::handle) serves it.
    pub(crate) fn handle_raw(
        &self,
        request: RawRequest,
        remote: SocketAddr,
    ) -> impl Future<Output = Reply> + Send + '_ {
        self.dispatch_raw(request, remote)
    }

    /// The access log, when the file turns it on.
    pub(crate) fn access_log(&self) -> Option<&crate::observe::access_log::AccessLog> {
        self.state.access_log.as_deref()
    }

    /// The actuator with `/actuator/gateway` (routes, refresh) added: what
    /// [`Server`](crate::Server) answers under `/actuator`, traced and counted in
    /// `http_server_requests_seconds` by msa-core's server layer.
    pub fn admin_router(&self, actuator: msa_core::actuator::Actuator) -> axum::Router {
        // Every worker's per-thread counts reach a scrape.
        let flush = axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.uri().path() == "/actuator/prometheus" {
                    crate::observe::metrics::flush_all().await;
                }
                next.run(request).await
            },
        );
        actuator
            .router()
            .merge(crate::admin::router(self.clone()))
            .layer(flush)
            .layer(msa_core::http::ServerLayer::new())
    }

    /// The gateway as one axum router (the admin router, and every other path proxied),
    /// to embed in an axum application. Serve it with connect info
    /// (`msa_core::shutdown::Shutdown::serve` does). [`Server`](crate::Server) is faster.
    pub fn router(&self, actuator: msa_core::actuator::Actuator) -> axum::Router {
        let gateway = self.clone();
        let proxy = move |ConnectInfo(remote): ConnectInfo<SocketAddr>, request: Request<Body>| {
            let gateway = gateway.clone();
            async move { gateway.handle(request, remote).await }
        };
        self.admin_router(actuator).fallback(proxy)
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    /// Lets the watch task take its next look.
    async fn tick(every: Duration) {
        tokio::time::advance(every).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_file_watch_applies_a_file_once_it_holds_still() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let routes = |id: &str| {
            format!(
                "routes:\n  - id: {id}\n    uri: http://127.0.0.1:1\n    predicates: [ 'Path=/{id}/**' ]\n"
            )
        };
        std::fs::write(&path, routes("first")).unwrap();
        let config = GatewayConfig::load(&path).unwrap();
        let gateway = Gateway::new(&config).unwrap().with_file(&path);
        let ids = |gateway: &Gateway| -> Vec<String> {
            gateway
                .table()
                .routes
                .iter()
                .map(|r| r.id.clone())
                .collect()
        };
        let every = Duration::from_secs(1);
        let _watch = gateway.watch_file(every);

        // An editor caught between truncating the file and writing it.
        std::fs::write(&path, "").unwrap();
        tick(every).await;
        assert_eq!(ids(&gateway), ["first"]);
        std::fs::write(&path, routes("the-second")).unwrap();
        tick(every).await;
        assert_eq!(ids(&gateway), ["first"], "still changing at the last look");
        tick(every).await;
        assert_eq!(ids(&gateway), ["the-second"]);
    }
}
