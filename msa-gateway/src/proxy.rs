//! The proxy: find the route, apply its filters, send the request upstream on a pooled
//! connection, and stream the answer back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use msa_breaker::circuit_breaker::CircuitBreakerRegistry;
use msa_discovery::balance::{Balancer, LoadBalancer, NoInstance};
use msa_discovery::discovery::{EurekaDiscovery, RegistryDiscovery, StaticDiscovery};
use tower::ServiceExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ConfigError, GatewayConfig};
use crate::filter::{Exchange, Filter, oversized_field};
use crate::h1::Outgoing;
use crate::http1::{RawRequest, Reply};
use crate::route::predicate::RequestInfo;
use crate::route::{Route, RouteTable, Target};
use crate::wire::{HopByHop, Name, RawHead, push_field};

/// The gateway: routes, clients and the balancer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    table: RwLock<Arc<RouteTable>>,
    /// The access log, when the file turns it on.
    access_log: Option<Arc<crate::access_log::AccessLog>>,
    max_header_size: usize,
    /// `server.max-connections-per-upstream`, shared out among the workers.
    max_connections_per_thread: usize,
    balancer: Option<Balancer>,
    metrics: crate::metrics::Metrics,
    /// How `https://` upstreams are verified.
    tls: Arc<rustls::ClientConfig>,
    /// CircuitBreaker filters' breakers, by name, kept across reloads.
    breakers: CircuitBreakerRegistry,
    /// Unique per gateway in the process (for per-thread caches).
    id: u64,
    /// Bumped on every reload, so threads refresh their cached table.
    generation: std::sync::atomic::AtomicU64,
    /// The file routes are reloaded from.
    file: Mutex<Option<std::path::PathBuf>>,
    /// Who may list and refresh the routes.
    management: Mutex<msa_core::management::Management>,
}

thread_local! {
    /// This thread's handle on the route table: (gateway, generation, table). The outer
    /// `Arc` is this thread's own, so the count a request takes is never written by
    /// another core; the shared inner one is cloned once per reload.
    static TABLE: std::cell::RefCell<Option<(u64, u64, Arc<ThreadTable>)>> =
        const { std::cell::RefCell::new(None) };
}

/// A request matched to its route: what serving it takes from the matching.
struct Matched {
    table: Arc<ThreadTable>,
    /// The route's place in the table.
    slot: usize,
    started: Instant,
    /// The normalized path.
    path: String,
    /// Variables the predicates captured.
    vars: Vec<(String, String)>,
    /// The Host header as the client sent it.
    host_header: Option<String>,
}

/// One worker thread's hold on the shared route table (see `TABLE`).
#[derive(Debug)]
struct ThreadTable(Arc<RouteTable>);

impl std::ops::Deref for ThreadTable {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.0
    }
}

/// The most body bytes CacheRequestBody keeps for retries (unless RequestSize says less).
const CACHE_LIMIT: usize = 10 << 20;

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times `forward:` may dispatch again within one request.
const MAX_FORWARDS: u8 = 4;

impl Gateway {
    /// A gateway serving `config`'s routes; the first mistake in them is the error.
    pub fn new(config: &GatewayConfig) -> Result<Self, ConfigError> {
        let breakers = CircuitBreakerRegistry::new(msa_breaker::Section::default())
            .map_err(|e| config.source.error("", e.to_string()))?;
        let table = RouteTable::build(config, &breakers)?;
        let tls = Arc::new(
            crate::pool::tls_config(config.server.upstream_ca_file.as_deref())
                .map_err(|e| config.source.error("server.upstream-ca-file", e))?,
        );
        let discovery = &config.discovery;
        let balancer = if let Some(registry) = &discovery.registry {
            Some(Balancer::new(
                RegistryDiscovery::new(registry),
                discovery.balancer.clone(),
            ))
        } else if let Some(eureka) = &discovery.eureka {
            Some(Balancer::new(
                EurekaDiscovery::new(eureka),
                discovery.balancer.clone(),
            ))
        } else if !discovery.instances.is_empty() {
            Some(Balancer::new(
                StaticDiscovery::new(discovery.instances.clone()),
                discovery.balancer.clone(),
            ))
        } else {
            None
        };
        if balancer.is_none()
            && let Some(route) = table
                .routes
                .iter()
                .find(|r| matches!(r.target, Target::Lb(_)))
        {
            return Err(config.source.error(
                &format!("routes.{}.uri", route.index),
                "lb:// needs a `discovery` section (registry, eureka or instances)",
            ));
        }
        let management = msa_core::management::Management::from_settings(config.server.bind, None)
            .map_err(|e| config.source.error("", e))?;
        let access_log = crate::access_log::AccessLog::open(&config.access_log)
            .map_err(|e| ConfigError {
                file: config.source.file.clone(),
                line: None,
                key: "msa.gateway.access-log.path".into(),
                message: format!("cannot open: {e}"),
            })?
            .map(Arc::new);
        Ok(Gateway {
            state: Arc::new(State {
                table: RwLock::new(Arc::new(table)),
                max_header_size: config.server.max_header_size,
                max_connections_per_thread: config
                    .server
                    .max_connections_per_upstream
                    .div_ceil(config.server.workers())
                    .max(1),
                balancer,
                metrics: crate::metrics::Metrics::new(),
                tls,
                breakers,
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                generation: std::sync::atomic::AtomicU64::new(0),
                file: Mutex::default(),
                management: Mutex::new(management),
                access_log,
            }),
        })
    }

    /// Swaps in `config`'s routes; in-flight requests finish on the routes they matched.
    /// A bad config changes nothing.
    pub fn reload(&self, config: &GatewayConfig) -> Result<usize, ConfigError> {
        let table = RouteTable::build(config, &self.state.breakers)?;
        let count = table.routes.len();
        *self
            .state
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        self.state
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(count)
    }

    /// Who may call `/actuator/gateway/*` (the routes reveal filter settings; refresh
    /// changes them): by default, a token from `MSA_MANAGEMENT_TOKEN` if set, else only a
    /// listener bound to a loopback address, judged by the file's `server.bind`. Set it
    /// for the address the gateway is served on, before [`admin_router`](Self::admin_router).
    pub fn with_management(self, management: msa_core::management::Management) -> Self {
        *self
            .state
            .management
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = management;
        self
    }

    pub(crate) fn management(&self) -> msa_core::management::Management {
        self.state
            .management
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Remembers the file [`reload_file`](Self::reload_file) reads.
    pub fn with_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        *self
            .state
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path.into());
        self
    }

    /// Reads the file again and swaps its routes in; on any mistake the old routes stay
    /// and the error says why.
    pub fn reload_file(&self) -> Result<usize, ConfigError> {
        let path = self
            .state
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
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
        self.state
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads the routes whenever the file given to [`with_file`](Self::with_file)
    /// changes (checked every `every`; a change is applied once the file has stayed the
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
        self.state
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current routes, cached per thread until a reload changes the generation.
    fn current_table(&self) -> Arc<ThreadTable> {
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

    async fn dispatch_raw(&self, raw: RawRequest, remote: SocketAddr) -> Reply {
        let table = self.current_table();
        let target = raw.target();
        let (path, query) = match target.bytes().position(|b| b == b'?') {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };
        let grpc = || {
            raw.head()
                .get(Name::ContentType)
                .is_some_and(|v| v.starts_with(b"application/grpc"))
        };
        if !table.raw || !path.starts_with('/') || !plain_target(target.as_bytes()) || grpc() {
            return self.dispatch_parsed(raw, remote).await;
        }
        let started = Instant::now();
        if let Some(refused) = firewall(path) {
            return Reply::Http(unrouted(&raw.method, refused, started));
        }
        let Some(path) = normalize(path) else {
            return Reply::Http(unrouted(&raw.method, climbs_above_root(), started));
        };
        if let Some(refused) = self.oversized(raw.head().fields().map(|(_, n, v)| (n, v))) {
            return Reply::Http(unrouted(&raw.method, refused, started));
        }
        // As `HeaderValue::to_str` reads it: visible ASCII only.
        let host_header = raw
            .head()
            .get(Name::Host)
            .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
            .and_then(|v| std::str::from_utf8(v).ok());
        let host_only = host_header.map(strip_port);
        let mut vars = Vec::new();
        let route = {
            let no_headers = HeaderMap::new();
            let mut info = RequestInfo {
                method: &raw.method,
                path: &path,
                query,
                headers: &no_headers,
                host: host_only.as_deref(),
                remote,
                draws: Vec::new(),
            };
            table.find(&mut info, &mut vars)
        };
        let Some(route) = route else {
            let answer = no_route(&raw.method, &path);
            return Reply::Http(unrouted(&raw.method, answer, started));
        };
        if !route.raw {
            // Served the general way, with the header map its filters need.
            let matched = Matched {
                slot: route.slot,
                table,
                started,
                path,
                vars,
                host_header: host_header.map(str::to_owned),
            };
            let method = raw.method.clone();
            return match raw.into_request() {
                Ok(request) => {
                    let (parts, body) = request.into_parts();
                    // Boxed: the raw path's future stays small.
                    Reply::Http(Box::pin(self.serve(matched, parts, body, remote, 0)).await)
                }
                Err(reason) => {
                    let refused = error_response(StatusCode::BAD_REQUEST, reason);
                    Reply::Http(unrouted(&method, refused, started))
                }
            };
        }
        let method = raw.method.clone();
        let span = request_span(&method, &route.id, &path);
        if !span.is_disabled() {
            let carrier = trace_context(raw.head());
            if !carrier.is_empty() {
                let _ = span.set_parent(msa_core::telemetry::propagation::extract(&carrier));
            }
        }
        // In the span: the trace context sent upstream is the gateway span's.
        let request =
            span.in_scope(|| upstream_request(route, &raw, path, query, vars, host_header, remote));
        // Sent here rather than in an `async fn` of its own: the request's future is moved
        // whole on every request, and each level adds to it.
        let reply = match request {
            Err(answer) => Reply::Http(*answer),
            Ok(request) => {
                // Pinned where they are made, and polled in the span by hand: wrapping
                // them (`timeout`, `instrument`) would move them whole, twice each.
                let mut send = std::pin::pin!(crate::pool::send_raw(
                    route.authority(),
                    request,
                    route.connect_timeout,
                    &self.state.tls,
                    self.state.max_connections_per_thread,
                ));
                let mut deadline = std::pin::pin!(tokio::time::sleep(route.response_timeout));
                let sent = std::future::poll_fn(|cx| {
                    let _entered = (!span.is_disabled()).then(|| span.enter());
                    if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                        return Poll::Ready(Some(sent));
                    }
                    deadline.as_mut().poll(cx).map(|()| None)
                })
                .await;
                match sent {
                    None => Reply::Http(timed_out(route)),
                    Some(Err(error)) => Reply::Http(upstream_error(&*error)),
                    Some(Ok((head, body))) => Reply::Raw(head, body),
                }
            }
        };
        let status = match &reply {
            Reply::Http(response) => response.status(),
            Reply::Raw(head, _) => head.status,
        };
        let version = match raw.http10 {
            true => http::Version::HTTP_10,
            false => http::Version::HTTP_11,
        };
        self.record(
            route,
            table.generation,
            &method,
            (raw.target(), version),
            status,
            started,
            remote,
            &span,
        );
        reply
    }

    /// Serves a request from the gateway's own loop the general way, as an
    /// `http::Request`.
    async fn dispatch_parsed(&self, raw: RawRequest, remote: SocketAddr) -> Reply {
        let started = Instant::now();
        let method = raw.method.clone();
        match raw.into_request() {
            // Boxed: the raw path's future stays small.
            Ok(request) => Reply::Http(Box::pin(self.dispatch(request, remote, 0)).await),
            Err(reason) => {
                let refused = error_response(StatusCode::BAD_REQUEST, reason);
                Reply::Http(unrouted(&method, refused, started))
            }
        }
    }
}

/// The request for a raw route's upstream, written out from the one that arrived: its
/// target rewritten by the route's filters, its header lines as they came less the
/// hop-by-hop ones, and Host, X-Forwarded-*, Forwarded and the trace context written by
/// the gateway. `Err` is the answer instead (a filter's, or a 400).
///
/// Not part of the `async fn` that sends it: what it needs would be kept in that
/// future's state, which is moved whole on every request.
fn upstream_request(
    route: &Route,
    raw: &RawRequest,
    path: String,
    query: Option<&str>,
    vars: Vec<(String, String)>,
    host: Option<&str>,
    remote: SocketAddr,
) -> Result<Outgoing, Box<Response<Body>>> {
    let mut ex = Exchange::new(path, query, HeaderMap::new(), vars, remote);
    for filter in &route.filters {
        filter.request(&mut ex)?;
    }
    let authority = route.authority();
    if authority.is_empty() {
        let response = error_response(StatusCode::BAD_GATEWAY, "the upstream URI has no host");
        return Err(Box::new(response));
    }
    let head = raw.head();
    // Room for what the gateway writes itself (Host, X-Forwarded-*, Forwarded).
    let mut out = Vec::with_capacity(raw.head_len() + 2 * authority.len() + 320);
    out.extend_from_slice(raw.method.as_str().as_bytes());
    out.push(b' ');
    let target_at = out.len();
    out.extend_from_slice(ex.path.as_bytes());
    if let Some(query) = &ex.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    if !plain_target(&out[target_at..]) {
        // What a filter wrote: sent as `http` reads it, if it does.
        match http::uri::PathAndQuery::try_from(&out[target_at..]) {
            Ok(target) => {
                out.truncate(target_at);
                out.extend_from_slice(target.as_str().as_bytes());
            }
            Err(_) => {
                return Err(Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    "the rewritten path is not a valid URI",
                )));
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(&mut out, b"host", authority.as_bytes());
    let hop = HopByHop::of(head);
    let mut had_length = false;
    for (known, name, value) in head.fields() {
        match known {
            Name::ContentLength => had_length = true,
            // Written by the gateway below.
            Name::Host
            | Name::XForwardedFor
            | Name::XForwardedProto
            | Name::XForwardedHost
            | Name::Forwarded => {}
            _ if hop.contains(known, name) => {}
            _ => push_field(&mut out, name, value),
        }
    }
    let ip = remote.ip().to_canonical();
    let mut ip_text = [0u8; 48];
    let ip_text = write_ip(ip, &mut ip_text);
    out.extend_from_slice(b"x-forwarded-for: ");
    forwarded_for(&mut out, head.values(Name::XForwardedFor), ip_text);
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = host {
        push_field(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    out.extend_from_slice(b"forwarded: ");
    forwarded_element(&mut out, head.values(Name::Forwarded), ip, ip_text, host);
    out.extend_from_slice(b"\r\n");
    let current = tracing::Span::current();
    if !current.is_disabled() {
        let mut carrier = HeaderMap::new();
        msa_core::telemetry::propagation::inject(&current.context(), &mut carrier);
        for (name, value) in &carrier {
            push_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let body = raw.body();
    if !body.is_empty() || had_length || crate::h1::expects_body(&raw.method) {
        out.extend_from_slice(b"content-length: ");
        crate::wire::push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Outgoing {
        head: out,
        body,
        head_only: raw.method == http::Method::HEAD,
    })
}

impl Gateway {
    /// 431 when a header field, or all of them, is larger than `server.max-header-size`.
    fn oversized<'a>(
        &self,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<Response<Body>> {
        let max = self.state.max_header_size;
        let (name, size) = oversized_field(fields, max)?;
        Some(error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("request header {name} is {size} bytes; the limit is {max}"),
        ))
    }

    /// Counts a request in its route's metrics and adds its access log line (when the
    /// log is on; `target` is the request target as the client sent it).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        route: &Route,
        generation: u64,
        method: &http::Method,
        (target, version): (&str, http::Version),
        status: StatusCode,
        started: Instant,
        remote: SocketAddr,
        span: &tracing::Span,
    ) {
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        self.state.metrics.observe_route(
            route,
            generation,
            method,
            status,
            now,
            elapsed.as_secs_f64(),
        );
        span.record("http.response.status_code", status.as_u16());
        if let Some(log) = &self.state.access_log {
            let trace = match span.is_disabled() {
                true => None,
                false => span.in_scope(msa_core::telemetry::current_trace_id),
            };
            log.log(
                remote.ip(),
                (method, target, version),
                status.as_u16(),
                elapsed,
                &route.id,
                trace.as_deref(),
            );
        }
    }

    /// The access log, when the file turns it on.
    pub(crate) fn access_log(&self) -> Option<&crate::access_log::AccessLog> {
        self.state.access_log.as_deref()
    }

    async fn dispatch(
        &self,
        request: Request<Body>,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        if let Some(refused) = firewall(parts.uri.path()) {
            return unrouted(&parts.method, refused, started);
        }
        let Some(path) = normalize(parts.uri.path()) else {
            return unrouted(&parts.method, climbs_above_root(), started);
        };
        let fields = parts.headers.iter();
        if let Some(refused) =
            self.oversized(fields.map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
        {
            return unrouted(&parts.method, refused, started);
        }
        let host_header = host(&parts);
        let host_only = host_header.as_deref().map(strip_port);
        let table = self.current_table();
        let mut vars = Vec::new();
        let route = {
            let mut info = RequestInfo {
                method: &parts.method,
                path: &path,
                query: parts.uri.query(),
                headers: &parts.headers,
                host: host_only.as_deref(),
                remote,
                draws: Vec::new(),
            };
            table.find(&mut info, &mut vars)
        };
        let Some(route) = route else {
            let answer = no_route(&parts.method, &path);
            return unrouted(&parts.method, answer, started);
        };
        let matched = Matched {
            slot: route.slot,
            table,
            started,
            path,
            vars,
            host_header,
        };
        self.serve(matched, parts, body, remote, forwards).await
    }

    /// Serves a request on the route it matched: in the gateway's span, counted in the
    /// route's metrics and logged.
    async fn serve(
        &self,
        matched: Matched,
        parts: http::request::Parts,
        body: Body,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        let Matched {
            table,
            slot,
            started,
            path,
            vars,
            host_header,
        } = matched;
        let route = &table.routes[slot];
        let method = parts.method.clone();
        let version = parts.version;
        // Copied only for the access log.
        let target = self.state.access_log.as_ref().map(|_| {
            parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string)
        });
        let span = request_span(&method, &route.id, &path);
        if !span.is_disabled()
            && (parts.headers.contains_key("traceparent") || parts.headers.contains_key("baggage"))
        {
            let _ = span.set_parent(msa_core::telemetry::propagation::extract(&parts.headers));
        }
        // Pinned where it is made and polled in the span by hand: `instrument` would move
        // it whole (twice), and awaiting it either way would keep room for it twice.
        let mut through = std::pin::pin!(self.through(
            route,
            parts,
            body,
            path,
            vars,
            host_header,
            remote,
            forwards,
        ));
        let response = std::future::poll_fn(|cx| {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            through.as_mut().poll(cx)
        })
        .await;
        self.record(
            route,
            table.generation,
            &method,
            (target.as_deref().unwrap_or_default(), version),
            response.status(),
            started,
            remote,
            &span,
        );
        response
    }

    #[allow(clippy::too_many_arguments)]
    async fn through(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: Body,
        path: String,
        vars: Vec<(String, String)>,
        host_header: Option<String>,
        remote: SocketAddr,
        forwards: u8,
    ) -> Response<Body> {
        // Hop-by-hop fields go before the filters run: a client's `Connection: X-Name`
        // cannot remove a header a filter adds.
        let websocket = is_websocket(&parts.headers);
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        let mut ex = Exchange::new(path, parts.uri.query(), headers, vars, remote);
        for filter in &route.filters {
            if let Err(response) = filter.request(&mut ex) {
                return self.respond(route, &ex, host_header.as_deref(), *response);
            }
        }
        for filter in &route.filters {
            if let Filter::RequestRateLimiter(limit) = filter
                && !limit.is_local()
            {
                let decision = Box::pin(limit.check_shared(&ex.headers, remote)).await;
                limit.headers(decision, &mut ex.response_headers);
                if !decision.allowed {
                    let refused = *crate::filter::too_many_requests();
                    return self.respond(route, &ex, host_header.as_deref(), refused);
                }
            }
        }
        let body = match ex.max_body {
            Some(max) => Body::new(Limited::new(body, max as usize)),
            None => body,
        };

        let uri = match &route.target {
            Target::Forward(path) => {
                if forwards >= MAX_FORWARDS {
                    return error_response(
                        StatusCode::LOOP_DETECTED,
                        "forward: went round too many times",
                    );
                }
                let mut request = Request::new(body);
                *request.method_mut() = parts.method;
                *request.uri_mut() = match &ex.query {
                    Some(query) => format!("{path}?{query}"),
                    None => path.clone(),
                }
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"));
                *request.headers_mut() = std::mem::take(&mut ex.headers);
                let response = Box::pin(self.dispatch(request, remote, forwards + 1)).await;
                return self.respond(route, &ex, host_header.as_deref(), response);
            }
            Target::Http { base, .. } => upstream_uri(
                base.scheme().cloned(),
                base.authority().cloned(),
                &ex.path,
                ex.query.as_deref(),
            ),
            Target::Lb(service) => service.parse().map_err(|_| ()).and_then(|authority| {
                upstream_uri(
                    Some(http::uri::Scheme::HTTP),
                    Some(authority),
                    &ex.path,
                    ex.query.as_deref(),
                )
            }),
        };
        let Ok(uri) = uri else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "the rewritten path is not a valid URI",
            );
        };

        let mut request = Request::new(body);
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        let mut headers = std::mem::take(&mut ex.headers);
        // A WebSocket handshake keeps its Upgrade and Connection headers (written again
        // below); the two upgraded connections are then joined byte for byte.
        strip_hop_by_hop(&mut headers);
        if websocket {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        // Room for the four forwarding headers and a trace context at once, rather than
        // growing (rehashing every header) on the way.
        headers.reserve(6);
        forwarded(&mut headers, remote, host_header.as_deref());
        let current = tracing::Span::current();
        if !current.is_disabled() {
            msa_core::telemetry::propagation::inject(&current.context(), &mut headers);
        }
        if !ex.preserve_host {
            headers.remove(header::HOST);
        }
        *request.headers_mut() = headers;
        if websocket {
            let mut parts = parts.extensions;
            let Some(downstream) = parts.remove::<hyper::upgrade::OnUpgrade>() else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "this connection cannot be upgraded",
                );
            };
            let (response, _) = Box::pin(self.send_once(route, request)).await;
            return self.respond(
                route,
                &ex,
                host_header.as_deref(),
                tunnel(downstream, response),
            );
        }

        // Awaited here rather than in a helper `async fn`, which would be one more level of
        // future as large as the request's, moved whole on every request.
        let response = match guards(route) {
            None => self.send_once(route, request).await.0,
            // Boxed: the common path's future stays small.
            Some(guards) => Box::pin(self.send_guarded(route, request, remote, guards)).await,
        };
        self.respond(route, &ex, host_header.as_deref(), response)
    }

    /// Sends once: the gateway's own error answers (timeout, unreachable, no instance) come
    /// back with `true`.
    async fn send_once(&self, route: &Route, request: Request<Body>) -> (Response<Body>, bool) {
        let h2c = matches!(route.target, Target::Http { h2c: true, .. });
        let sent = match &route.target {
            Target::Lb(_) => {
                let client = crate::pool::PoolClient {
                    connect_timeout: route.connect_timeout,
                    h2c,
                    tls: self.state.tls.clone(),
                    max_connections: self.state.max_connections_per_thread,
                };
                let Some(balancer) = &self.state.balancer else {
                    return (
                        error_response(StatusCode::SERVICE_UNAVAILABLE, "no discovery configured"),
                        true,
                    );
                };
                let balanced = LoadBalancer::new(client, balancer.clone());
                let sent = balanced.oneshot(request);
                Box::pin(tokio::time::timeout(route.response_timeout, sent)).await
            }
            _ => {
                // The TLS settings are lent, not cloned: an `Arc` count both workers wrote
                // on every request would bounce its cache line between cores.
                let sent = crate::pool::send(
                    request,
                    route.connect_timeout,
                    h2c,
                    &self.state.tls,
                    self.state.max_connections_per_thread,
                );
                tokio::time::timeout(route.response_timeout, sent).await
            }
        };
        match sent {
            Err(_) => (timed_out(route), true),
            Ok(Err(error)) => (upstream_error(&*error), true),
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(&mut parts.headers);
                }
                (Response::from_parts(parts, body), false)
            }
        }
    }

    /// Sends through a CircuitBreaker and/or Retry filter.
    async fn send_guarded(
        &self,
        route: &Route,
        request: Request<Body>,
        remote: SocketAddr,
        guards: Guards<'_>,
    ) -> Response<Body> {
        let Guards {
            breaker,
            retry,
            cache,
        } = guards;
        let (parts, body) = request.into_parts();
        let template = || {
            let mut request = Request::new(());
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            request
        };
        // A body to send again: buffered when the route caches bodies, or empty.
        let retry = retry.filter(|r| r.applies_to(&parts.method) && r.retries > 0);
        let mut body = Some(body);
        let mut buffered: Option<bytes::Bytes> = None;
        if retry.is_some() {
            let empty = body
                .as_ref()
                .is_some_and(|b| http_body::Body::size_hint(b).exact() == Some(0));
            if empty {
                buffered = Some(bytes::Bytes::new());
            } else if cache && let Some(whole) = body.take() {
                match Limited::new(whole, CACHE_LIMIT).collect().await {
                    Ok(collected) => buffered = Some(collected.to_bytes()),
                    Err(_) => {
                        return error_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the request body is too large to cache for retries",
                        );
                    }
                }
            }
        }
        let mut attempt = 0;
        loop {
            let next_body = match (&buffered, body.take()) {
                (Some(bytes), _) => Body::from(bytes.clone()),
                (None, Some(body)) => body,
                (None, None) => Body::empty(),
            };
            let request = template().map(|()| next_body);
            let permit = match breaker {
                Some(b) => match b.breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(open) => {
                        return self
                            .fallback(b, &template(), remote, &open.to_string())
                            .await;
                    }
                },
                None => None,
            };
            let (response, failed) = self.send_once(route, request).await;
            let status = response.status();
            if let (Some(permit), Some(b)) = (permit, breaker) {
                let failure = failed || b.statuses.contains(&status);
                permit.complete(if failure {
                    msa_breaker::Outcome::Failure
                } else {
                    msa_breaker::Outcome::Success
                });
            }
            if let Some(r) = retry
                && buffered.is_some()
                && attempt < r.retries
                && r.retry_on(status, failed)
            {
                tokio::time::sleep(r.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            if let Some(b) = breaker
                && (failed || b.statuses.contains(&status))
                && b.fallback.is_some()
            {
                let reason = format!("the upstream answered {status}");
                return self.fallback(b, &template(), remote, &reason).await;
            }
            return response;
        }
    }

    /// The CircuitBreaker's fallback: `forward:` dispatched inside the gateway, or 503.
    async fn fallback(
        &self,
        breaker: &crate::resilience::BreakerFilter,
        template: &Request<()>,
        remote: SocketAddr,
        reason: &str,
    ) -> Response<Body> {
        let Some(path) = &breaker.fallback else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, reason);
        };
        let mut request = Request::new(Body::empty());
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        *request.headers_mut() = template.headers().clone();
        request.headers_mut().remove(header::CONTENT_LENGTH);
        if let Ok(value) = HeaderValue::from_str(reason) {
            request.headers_mut().insert("x-msa-fallback-reason", value);
        }
        Box::pin(self.dispatch(request, remote, 1)).await
    }

    fn respond(
        &self,
        route: &Route,
        ex: &Exchange,
        host: Option<&str>,
        response: Response<Body>,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        for (name, value) in &ex.response_headers {
            parts.headers.insert(name, value.clone());
        }
        for filter in &route.filters {
            filter.response(&ex.vars, host, &mut parts);
        }
        Response::from_parts(parts, body)
    }

    /// The actuator with `/actuator/gateway` (routes, refresh) added: what
    /// [`Server`](crate::Server) answers under `/actuator`, traced and counted in
    /// `http_server_requests_seconds` by msa-core's server layer.
    pub fn admin_router(&self, actuator: msa_core::actuator::Actuator) -> axum::Router {
        // Every worker's per-thread counts reach a scrape.
        let flush = axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.uri().path() == "/actuator/prometheus" {
                    crate::metrics::flush_all().await;
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

fn upstream_error(error: &(dyn std::error::Error + 'static)) -> Response<Body> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(none) = e.downcast_ref::<NoInstance>() {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &none.to_string());
        }
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the route allows",
            );
        }
        source = e.source();
    }
    let connect = {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut found = false;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                found = matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::AddrNotAvailable
                );
                break;
            }
            source = e.source();
        }
        found
    };
    if connect {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the upstream is unreachable: {error}"),
        )
    } else {
        error_response(
            StatusCode::BAD_GATEWAY,
            &format!("the upstream failed: {error}"),
        )
    }
}

/// The gateway's span for a request: a child of the caller's trace, parent of the
/// upstream call.
fn request_span(method: &http::Method, route: &str, path: &str) -> tracing::Span {
    tracing::info_span!(
        target: "msa_gateway::proxy",
        "gateway request",
        otel.name = %SpanName(method, route),
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    )
}

/// The trace context fields of a request as it arrived, for the propagator to read.
fn trace_context(head: &RawHead) -> HeaderMap {
    let mut carrier = HeaderMap::new();
    if !head.has(Name::Traceparent) && !head.has(Name::Baggage) {
        return carrier;
    }
    for (known, _, value) in head.fields() {
        let name = match known {
            Name::Traceparent => "traceparent",
            Name::Tracestate => "tracestate",
            Name::Baggage => "baggage",
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            carrier.append(HeaderName::from_static(name), value);
        }
    }
    carrier
}

/// `answer`, counted as an answer no route gave.
fn unrouted(method: &http::Method, answer: Response<Body>, started: Instant) -> Response<Body> {
    crate::metrics::observe_unrouted(method, answer.status(), started);
    answer
}

/// 400 for a path that holds an encoded `/`, `\` or NUL, or a raw `\`, as Spring
/// Security's StrictHttpFirewall refuses them: decoded into a capture and written into
/// another path, they could leave the route's template (`..%2F..%2Fadmin`), and upstreams
/// differ on what they mean. (Encoded dots are dot segments where a whole segment is one,
/// resolved by `normalize`; a capture that decodes to one is refused where it would be
/// written into a path, see `filter::substitute_path`.)
fn firewall(path: &str) -> Option<Response<Body>> {
    let bytes = path.as_bytes();
    // On every request, and paths are short: a plain loop (memchr's set-up costs more than
    // it saves here, ~300 instructions a request under callgrind).
    let first = bytes.iter().position(|&b| b == b'%' || b == b'\\')?;
    let reason = bytes
        .iter()
        .enumerate()
        .skip(first)
        .find_map(|(at, &b)| match b {
            b'\\' => Some("a backslash"),
            b'%' => match bytes.get(at + 1..at + 3) {
                Some([b'2', b'f' | b'F']) => Some("an encoded slash (%2F)"),
                Some([b'5', b'c' | b'C']) => Some("an encoded backslash (%5C)"),
                Some([b'0', b'0']) => Some("an encoded NUL (%00)"),
                _ => None,
            },
            _ => None,
        })?;
    let message = format!("the path holds {reason}, which the gateway refuses");
    Some(error_response(StatusCode::BAD_REQUEST, &message))
}

/// 400 for a path whose `..` segments climb above the root.
fn climbs_above_root() -> Response<Body> {
    error_response(StatusCode::BAD_REQUEST, "the path climbs above the root")
}

/// 404 when no route matches.
fn no_route(method: &http::Method, path: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no route matches {method} {path}"),
    )
}

/// The answer when the upstream took longer than the route's response timeout.
fn timed_out(route: &Route) -> Response<Body> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "the upstream did not answer within {:?}",
            route.response_timeout
        ),
    )
}

/// Whether a request target can be passed on as it is: visible ASCII that `http` takes
/// in a path and query as well (no fragment, nothing it would refuse), and not too long.
fn plain_target(target: &[u8]) -> bool {
    target.len() < usize::from(u16::MAX) - 1
        && target
            .iter()
            .all(|b| (0x21..0x7f).contains(b) && !matches!(b, b'#' | b'<' | b'>' | b'`' | b'"'))
}

/// `{method} {route id}`, formatted only when a subscriber records the span.
struct SpanName<'a>(&'a http::Method, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Passes the upstream's answer to a WebSocket handshake on; when it is 101, joins the
/// client's and the upstream's upgraded connections until either closes (close frames and
/// their codes pass through untouched).
fn tunnel(downstream: hyper::upgrade::OnUpgrade, mut response: Response<Body>) -> Response<Body> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let Some(upstream) = response
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "the upstream switched protocols without an upgrade",
        );
    };
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((client, server)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut server = hyper_util::rt::TokioIo::new(server);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(%error, "WebSocket tunnel closed with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response
}

/// `scheme://authority/path?query`, built from its parts (no text to parse again).
fn upstream_uri(
    scheme: Option<http::uri::Scheme>,
    authority: Option<http::uri::Authority>,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, ()> {
    let mut target = Vec::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        target.push(b'?');
        target.extend_from_slice(query.as_bytes());
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = scheme;
    parts.authority = authority;
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)).map_err(|_| ())?,
    );
    Uri::from_parts(parts).map_err(|_| ())
}

/// A route's CircuitBreaker and Retry filters (the first of each), and whether it caches
/// request bodies for retries.
struct Guards<'a> {
    breaker: Option<&'a crate::resilience::BreakerFilter>,
    retry: Option<&'a crate::resilience::RetryFilter>,
    cache: bool,
}

/// The route's guards; `None` when it has neither a CircuitBreaker nor a Retry filter.
fn guards(route: &Route) -> Option<Guards<'_>> {
    let mut guards = Guards {
        breaker: None,
        retry: None,
        cache: false,
    };
    for filter in &route.filters {
        match filter {
            Filter::CircuitBreaker(b) if guards.breaker.is_none() => guards.breaker = Some(b),
            Filter::Retry(r) if guards.retry.is_none() => guards.retry = Some(r),
            Filter::CacheRequestBody => guards.cache = true,
            _ => {}
        }
    }
    (guards.breaker.is_some() || guards.retry.is_some()).then_some(guards)
}

/// A JSON error answer, in Spring's shape.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    msa_core::http::error_response(status, message)
}

/// The path with `.` and `..` segments resolved (also written `%2e`), or `None` if it
/// climbs above the root.
pub(crate) fn normalize(path: &str) -> Option<String> {
    // One pass over the path for what would need work: "/.", "//", "%2e" or "%2E".
    let bytes = path.as_bytes();
    let needs = bytes.iter().enumerate().any(|(i, &b)| match b {
        b'/' => matches!(bytes.get(i + 1), Some(b'.' | b'/')),
        b'%' => bytes.get(i + 1) == Some(&b'2') && matches!(bytes.get(i + 2), Some(b'e' | b'E')),
        _ => false,
    });
    if !needs {
        return Some(if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        });
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        match decoded.as_str() {
            "." => trailing = i == last,
            ".." => {
                out.pop()?;
                trailing = i == last;
            }
            "" if i != last => {}
            _ => {
                out.push(segment);
                trailing = false;
            }
        }
    }
    let mut normalized = format!("/{}", out.join("/"));
    if (trailing || path.ends_with('/')) && !normalized.ends_with('/') {
        normalized.push('/');
    }
    Some(normalized)
}

fn host(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
}

/// The host name without its port, lowercased (borrowed when it already is).
fn strip_port(host: &str) -> std::borrow::Cow<'_, str> {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host
            .bytes()
            .position(|b| b == b':')
            .map_or(host, |colon| &host[..colon]),
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || name.as_str() == "proxy-connection");
    if !present {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// X-Forwarded-For/-Proto/-Host and Forwarded, appended to what earlier proxies said.
///
/// On every proxied request: one buffer per header, no formatting machinery.
fn forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: Option<&str>) {
    let ip = remote.ip().to_canonical();
    let mut ip_text = [0u8; 48];
    let ip_text = write_ip(ip, &mut ip_text);
    let host = host.filter(|h| HeaderValue::from_str(h).is_ok());

    let mut value = Vec::with_capacity(64);
    let earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::as_bytes);
    forwarded_for(&mut value, earlier, ip_text);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST, host);
    }

    let mut value = Vec::with_capacity(96);
    let earlier = headers
        .get_all(header::FORWARDED)
        .iter()
        .map(HeaderValue::as_bytes);
    forwarded_element(&mut value, earlier, ip, ip_text, host);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(header::FORWARDED, value);
    }
}

/// The X-Forwarded-For value: what earlier proxies said (every such field, in order),
/// then the client's address.
fn forwarded_for<'a>(value: &mut Vec<u8>, earlier: impl Iterator<Item = &'a [u8]>, ip: &[u8]) {
    for earlier in earlier {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip);
}

/// The Forwarded value: what earlier proxies said, then `for=...;proto=http;host="..."`.
fn forwarded_element<'a>(
    value: &mut Vec<u8>,
    earlier: impl Iterator<Item = &'a [u8]>,
    ip: std::net::IpAddr,
    ip_text: &[u8],
    host: Option<&str>,
) {
    for earlier in earlier {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(b"for=");
    if ip.is_ipv6() {
        value.extend_from_slice(b"\"[");
        value.extend_from_slice(ip_text);
        value.extend_from_slice(b"]\"");
    } else {
        value.extend_from_slice(ip_text);
    }
    value.extend_from_slice(b";proto=http");
    if let Some(host) = host {
        // A quoted-string (RFC 7239, RFC 9110 §5.6.4): a client's `"` or `\` cannot end
        // it and add parameters of its own.
        value.extend_from_slice(b";host=\"");
        if !host.bytes().any(|b| b == b'"' || b == b'\\') {
            value.extend_from_slice(host.as_bytes());
        } else {
            for &b in host.as_bytes() {
                if b == b'"' || b == b'\\' {
                    value.push(b'\\');
                }
                value.push(b);
            }
        }
        value.push(b'"');
    }
}

/// `ip` as text in `buffer`: IPv4 by hand (the common case, on every request), IPv6
/// through `Display`.
fn write_ip(ip: std::net::IpAddr, buffer: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut len = 0;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buffer[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buffer[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buffer[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buffer[len] = b'0' + octet % 10;
                len += 1;
            }
        }
        std::net::IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buffer[..]);
            let _ = write!(cursor, "{v6}");
            len = cursor.position() as usize;
        }
    }
    &buffer[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved_before_matching() {
        assert_eq!(normalize("/api/orders").as_deref(), Some("/api/orders"));
        assert_eq!(normalize("/api/./orders").as_deref(), Some("/api/orders"));
        assert_eq!(
            normalize("/api/x/../orders").as_deref(),
            Some("/api/orders")
        );
        assert_eq!(normalize("/api/%2e%2E/admin").as_deref(), Some("/admin"));
        assert_eq!(normalize("/api//orders/").as_deref(), Some("/api/orders/"));
        assert_eq!(normalize("/a/.."), Some("/".to_owned()));
        assert_eq!(normalize("/../etc/passwd"), None);
        assert_eq!(normalize("/%2e%2e/etc"), None);
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn forwarded_headers_append() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        forwarded(
            &mut headers,
            "10.0.0.1:5000".parse().unwrap(),
            Some("shop.example.org"),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "shop.example.org");
        assert_eq!(
            headers["forwarded"],
            "for=10.0.0.1;proto=http;host=\"shop.example.org\""
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut buffer = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.100.9.199",
            "192.0.2.1",
            "::1",
            "2001:db8::8:800:200c:417a",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(write_ip(parsed, &mut buffer), parsed.to_string().as_bytes());
        }
        let mut headers = HeaderMap::new();
        forwarded(&mut headers, "[2001:db8::1]:443".parse().unwrap(), None);
        assert_eq!(headers["x-forwarded-for"], "2001:db8::1");
        assert_eq!(headers["forwarded"], "for=\"[2001:db8::1]\";proto=http");
        let mut headers = HeaderMap::new();
        forwarded(&mut headers, "[::ffff:10.1.2.3]:443".parse().unwrap(), None);
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
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
