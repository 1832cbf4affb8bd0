//! The estate as the admin sees it: every instance the registry lists (and the servers it
//! was told about), each polled on its management address — health every second,
//! `/actuator/prometheus` every two — into a bounded history of request rate, error
//! percentage and p99, circuit breaker states with their recent transitions, and the
//! calls it makes to other services (the service graph's edges).
//!
//! Every answer from an instance is untrusted: bodies are read up to
//! [`EstateConfig::max_body`], and everything kept per instance is bounded (history
//! points, targets, breakers, transitions).

use msa_core::sync::lock;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use msa_core::ServiceInstance;
use msa_discovery::discovery::Catalog;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::scrape::{self, Histogram, Scrape, Window};

/// How the admin polls instances, and how much it keeps.
#[derive(Clone, Debug)]
pub struct EstateConfig {
    /// How often each instance's health is read (1 s).
    pub health_every: Duration,
    /// How often each instance's metrics are scraped (2 s).
    pub scrape_every: Duration,
    /// History points kept per instance (300: ten minutes at 2 s).
    pub history: usize,
    /// How long one call to an instance may take (2 s).
    pub timeout: Duration,
    /// The largest answer read from an instance (4 MiB).
    pub max_body: usize,
    /// Instances followed at most (2,000); more are left out, with a warning.
    pub max_instances: usize,
    /// The estate's management token, sent as `Authorization: Bearer` to instances.
    pub token: Option<String>,
}

impl Default for EstateConfig {
    fn default() -> Self {
        EstateConfig {
            health_every: Duration::from_secs(1),
            scrape_every: Duration::from_secs(2),
            history: 300,
            timeout: Duration::from_secs(2),
            max_body: 4 << 20,
            max_instances: 2000,
            token: None,
        }
    }
}

/// Transitions kept per breaker.
const TRANSITIONS: usize = 20;

/// What the estate page and the graph show rates over: the scrapes of the last 30 s (a
/// chart point is one scrape interval).
const WINDOW: Duration = Duration::from_secs(30);
/// Scrapes kept for [`WINDOW`], at most.
const RECENT: usize = 32;

/// The estate, followed; cheap to clone.
#[derive(Clone, Debug)]
pub struct Estate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EstateConfig,
    http: reqwest::Client,
    tracked: Mutex<BTreeMap<Key, Tracked>>,
    changes: watch::Sender<u64>,
}

/// An instance's key: service and id.
type Key = (String, String);

#[derive(Debug)]
struct Tracked {
    instance: ServiceInstance,
    /// Where it came from: `registry`, or the kind of server the admin was told about.
    source: &'static str,
    /// Its management base URL.
    base: String,
    health: String,
    health_body: Option<Value>,
    error: Option<String>,
    checked: Option<SystemTime>,
    version: Option<String>,
    started: Option<f64>,
    rss: Option<f64>,
    /// The scrapes of the last [`WINDOW`], oldest first.
    recent: VecDeque<(Instant, Scrape)>,
    window: Window,
    calls: BTreeMap<String, Window>,
    history: VecDeque<Point>,
    breakers: BTreeMap<String, Breaker>,
    _poller: Poller,
}

/// Aborts the instance's polling task when the instance is dropped.
#[derive(Debug)]
struct Poller(tokio::task::JoinHandle<()>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One point of an instance's history.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Requests served per second.
    pub rate: f64,
    /// Percentage of them that failed.
    pub error_pct: f64,
    /// Their 99th percentile, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Resident memory, in bytes.
    pub rss: Option<f64>,
}

/// A circuit breaker of an instance.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Breaker {
    /// Its state (`CLOSED`, `OPEN`, `HALF_OPEN`…).
    pub state: String,
    /// When the admin saw it enter that state (ms since the epoch).
    pub since_ms: u64,
    /// Recent transitions, newest last.
    pub transitions: VecDeque<Transition>,
}

/// A breaker's change of state, as the admin saw it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
}

/// One instance, as the estate page lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    /// Its service.
    pub service: String,
    /// Its id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Its zone, if it has one.
    pub zone: Option<String>,
    /// Its status in the registry (`UP`, `DOWN`, `OUT_OF_SERVICE`…).
    pub registry_status: String,
    /// Its own health (`UP`, `DOWN`…), `UNREACHABLE`, or `UNKNOWN` before the first poll.
    pub health: String,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
    /// Its version (`/actuator/info`, or the `version` metadata).
    pub version: Option<String>,
    /// Seconds since its process started.
    pub uptime_seconds: Option<u64>,
    /// Request rate, error percentage and p99 over the last 30 s.
    pub window: Window,
    /// Its circuit breakers that are not closed, with their state.
    pub breakers_open: Vec<(String, String)>,
    /// `registry`, or the kind of server the admin was told about.
    pub source: &'static str,
}

/// One service and its instances.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceSummary {
    /// Its name.
    pub name: String,
    /// Its instances.
    pub instances: Vec<InstanceSummary>,
}

/// One instance in detail, for its page.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    /// What the estate page shows.
    pub summary: InstanceSummary,
    /// Its health document, as it answered it.
    pub health: Option<Value>,
    /// Its registry metadata.
    pub metadata: BTreeMap<String, String>,
    /// Its history, oldest first.
    pub history: Vec<Point>,
    /// Its circuit breakers.
    pub breakers: BTreeMap<String, Breaker>,
    /// The calls it made in the last 30 s, by target.
    pub calls: BTreeMap<String, Window>,
}

/// The service graph: services, and who calls whom.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Graph {
    /// Every service with its served traffic.
    pub nodes: Vec<Node>,
    /// Every caller → callee pair the callers' metrics name, with the traffic of the
    /// last 30 s.
    pub edges: Vec<Edge>,
}

/// A service of the graph.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Instances, and of those healthy.
    pub instances: usize,
    /// Healthy instances.
    pub healthy: usize,
    /// What it served, summed over its instances.
    pub window: Window,
}

/// Calls from one service to another.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    /// The calling service.
    pub from: String,
    /// The called service (the call's `client_name`).
    pub to: String,
    /// Rate, error percentage and p99 (the worst of the callers' instances).
    pub window: Window,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Estate {
    /// An empty estate polling with `config`.
    pub fn new(config: EstateConfig) -> Estate {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Estate {
            inner: Arc::new(Inner {
                config,
                http,
                tracked: Mutex::default(),
                changes: watch::Sender::new(0),
            }),
        }
    }

    fn tracked(&self) -> MutexGuard<'_, BTreeMap<Key, Tracked>> {
        lock(&self.inner.tracked)
    }

    /// A receiver that changes whenever what the pages show changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Follows `catalog` (a registry's): instances appear and go with it. Runs until the
    /// estate is dropped.
    pub fn follow(&self, mut catalog: watch::Receiver<Catalog>) {
        let estate = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let now = catalog.borrow_and_update().clone();
                let Some(inner) = estate.upgrade() else {
                    return;
                };
                Estate { inner }.reconcile(&now);
                if catalog.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Adds a server the registry does not list (a gateway, a config server, the registry
    /// itself), polled at `url` like an instance. `kind` names it on the pages
    /// (`gateway`, `config-server`, `registry`).
    pub fn add_server(&self, kind: &'static str, name: &str, url: &str) -> Result<(), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut instance =
            ServiceInstance::new(name, host, port).with_id(format!("{name}@{host}:{port}"));
        if https {
            instance = instance.with_scheme(msa_core::Scheme::Https);
        }
        let base = url.trim_end_matches('/').to_owned();
        let key = (instance.service.clone(), instance.id.clone());
        let tracked = self.start(instance, kind, base);
        self.tracked().insert(key, tracked);
        self.changed();
        Ok(())
    }

    fn reconcile(&self, catalog: &Catalog) {
        let mut tracked = self.tracked();
        let mut listed = 0usize;
        let mut keep = std::collections::BTreeSet::new();
        for (service, instances) in catalog.iter() {
            for instance in instances.iter() {
                listed += 1;
                if listed > self.inner.config.max_instances {
                    continue;
                }
                let key = (service.clone(), instance.id.clone());
                keep.insert(key.clone());
                match tracked.get_mut(&key) {
                    Some(known) => known.instance = instance.clone(),
                    None => {
                        let base = management_base(instance);
                        let new = self.start(instance.clone(), "registry", base);
                        tracked.insert(key, new);
                    }
                }
            }
        }
        if listed > self.inner.config.max_instances {
            tracing::warn!(
                listed,
                followed = self.inner.config.max_instances,
                "more instances than the admin follows"
            );
        }
        tracked.retain(|key, t| t.source != "registry" || keep.contains(key));
        drop(tracked);
        self.changed();
    }

    fn start(&self, instance: ServiceInstance, source: &'static str, base: String) -> Tracked {
        let key = (instance.service.clone(), instance.id.clone());
        let task = tokio::spawn(poll(Arc::downgrade(&self.inner), key));
        Tracked {
            version: instance.metadata.get("version").cloned(),
            instance,
            source,
            base,
            health: "UNKNOWN".into(),
            health_body: None,
            error: None,
            checked: None,
            started: None,
            rss: None,
            recent: VecDeque::new(),
            window: Window::default(),
            calls: BTreeMap::new(),
            history: VecDeque::new(),
            breakers: BTreeMap::new(),
            _poller: Poller(task),
        }
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Every service and its instances, by name.
    pub fn overview(&self) -> Vec<ServiceSummary> {
        let tracked = self.tracked();
        let mut services: Vec<ServiceSummary> = Vec::new();
        for ((service, _), t) in tracked.iter() {
            let summary = summary(t);
            match services.last_mut() {
                Some(last) if last.name == *service => last.instances.push(summary),
                _ => services.push(ServiceSummary {
                    name: service.clone(),
                    instances: vec![summary],
                }),
            }
        }
        services
    }

    /// One instance in detail.
    pub fn instance(&self, service: &str, id: &str) -> Option<InstanceDetail> {
        let tracked = self.tracked();
        let t = tracked.get(&(service.to_owned(), id.to_owned()))?;
        Some(InstanceDetail {
            summary: summary(t),
            health: t.health_body.clone(),
            metadata: t.instance.metadata.clone(),
            history: t.history.iter().copied().collect(),
            breakers: t.breakers.clone(),
            calls: t.calls.clone(),
        })
    }

    /// Where an instance's management endpoints are, and its kind.
    pub(crate) fn base(&self, service: &str, id: &str) -> Option<(String, &'static str)> {
        let tracked = self.tracked();
        let t = tracked.get(&(service.to_owned(), id.to_owned()))?;
        Some((t.base.clone(), t.source))
    }

    /// The servers of one kind the admin was told about, by base URL.
    pub(crate) fn servers(&self, kind: &str) -> Vec<String> {
        self.tracked()
            .values()
            .filter(|t| t.source == kind)
            .map(|t| t.base.clone())
            .collect()
    }

    /// The services the registry lists.
    pub(crate) fn registered_services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tracked()
            .iter()
            .filter(|(_, t)| t.source == "registry")
            .map(|((service, _), _)| service.clone())
            .collect();
        names.dedup();
        names
    }

    /// The service graph of the last 30 s.
    pub fn graph(&self) -> Graph {
        let tracked = self.tracked();
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String), Window> = BTreeMap::new();
        for ((service, _), t) in tracked.iter() {
            let node = nodes.entry(service.clone()).or_insert_with(|| Node {
                name: service.clone(),
                instances: 0,
                healthy: 0,
                window: Window::default(),
            });
            node.instances += 1;
            node.healthy += usize::from(t.health == "UP");
            node.window = sum(node.window, t.window);
            // Every target seen, idle ones too (drawn without traffic), as Kiali does.
            for (target, window) in &t.calls {
                let edge = edges.entry((service.clone(), target.clone())).or_default();
                *edge = sum(*edge, *window);
            }
        }
        for (_, to) in edges.keys() {
            nodes.entry(to.clone()).or_insert_with(|| Node {
                name: to.clone(),
                instances: 0,
                healthy: 0,
                window: Window::default(),
            });
        }
        Graph {
            nodes: nodes.into_values().collect(),
            edges: edges
                .into_iter()
                .map(|((from, to), window)| Edge { from, to, window })
                .collect(),
        }
    }

    /// GETs `path` from an instance's management address (with the token); the body as
    /// JSON, bounded.
    pub(crate) async fn get_json(&self, base: &str, path: &str) -> Result<Value, String> {
        let request = self.request(reqwest::Method::GET, base, path);
        let (status, body) = self.send(request).await?;
        if !status.is_success() && status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(format!("{path} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: not JSON: {e}"))
    }

    /// Sends `body` as JSON to an instance's management `path`; its status.
    pub(crate) async fn post_json(
        &self,
        base: &str,
        path: &str,
        body: &Value,
    ) -> Result<(reqwest::StatusCode, String), String> {
        let request = self.request(reqwest::Method::POST, base, path).json(body);
        let (status, body) = self.send(request).await?;
        let mut text = String::from_utf8_lossy(&body).into_owned();
        text.truncate(text.floor_char_boundary(1024));
        Ok((status, text))
    }

    fn request(&self, method: reqwest::Method, base: &str, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .inner
            .http
            .request(method, format!("{base}{path}"))
            .header(http::header::ACCEPT, "application/json")
            // Sampled out: an instance's spans of being polled every second would bury
            // its traces (a parent-based sampler, OpenTelemetry's default, follows it).
            .header("traceparent", unsampled_traceparent());
        if let Some(token) = &self.inner.config.token {
            request = request.bearer_auth(token);
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let mut response = request
            .send()
            .await
            .map_err(|e| msa_core::secrets::mask_url(&e.without_url().to_string()))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > self.inner.config.max_body {
                return Err(format!(
                    "the answer is larger than {} bytes",
                    self.inner.config.max_body
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

fn sum(a: Window, b: Window) -> Window {
    let rate = a.rate + b.rate;
    if rate <= 0.0 {
        return Window::default();
    }
    Window {
        rate,
        error_pct: (a.error_pct * a.rate + b.error_pct * b.rate) / rate,
        p99_ms: match (a.p99_ms, b.p99_ms) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
    }
}

fn summary(t: &Tracked) -> InstanceSummary {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    InstanceSummary {
        service: t.instance.service.clone(),
        id: t.instance.id.clone(),
        address: t.instance.authority(),
        zone: t.instance.zone.clone(),
        registry_status: if t.source == "registry" {
            t.instance.status.as_str().to_owned()
        } else {
            "-".to_owned()
        },
        health: t.health.clone(),
        error: t.error.clone(),
        version: t.version.clone(),
        uptime_seconds: t.started.map(|s| (now - s).max(0.0) as u64),
        window: t.window,
        breakers_open: t
            .breakers
            .iter()
            .filter(|(_, b)| b.state != "CLOSED")
            .map(|(name, b)| (name.clone(), b.state.clone()))
            .collect(),
        source: t.source,
    }
}

/// Where an instance's management endpoints are: its `management.port` metadata (as
/// Spring's Eureka client publishes it) on its host, else its own address.
fn management_base(instance: &ServiceInstance) -> String {
    let port = instance
        .metadata
        .get("management.port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(instance.port);
    let host = if instance.host.contains(':') && !instance.host.starts_with('[') {
        format!("[{}]", instance.host)
    } else {
        instance.host.clone()
    };
    format!("{}://{host}:{port}", instance.scheme.as_str())
}

/// A W3C `traceparent` with fresh ids and the sampled flag off.
fn unsampled_traceparent() -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let random = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(n ^ salt);
        hasher.finish() | 1
    };
    format!(
        "00-{:016x}{:016x}-{:016x}-00",
        random(1),
        random(2),
        random(3)
    )
}

/// Polls one instance until it leaves the estate.
async fn poll(inner: Weak<Inner>, key: Key) {
    let Some(live) = inner.upgrade() else { return };
    let health_every = live.config.health_every;
    let scrapes = (live.config.scrape_every.as_millis() / health_every.as_millis().max(1)).max(1);
    drop(live);
    let mut ticker = tokio::time::interval(health_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u128 = 0;
    loop {
        ticker.tick().await;
        let Some(live) = inner.upgrade() else { return };
        let estate = Estate { inner: live };
        let Some((base, _)) = estate.base(&key.0, &key.1) else {
            return;
        };
        let first = tick == 0;
        let scrape_now = tick.is_multiple_of(scrapes);
        tick += 1;
        estate.check_health(&key, &base).await;
        if first {
            estate.read_info(&key, &base).await;
        }
        if scrape_now {
            estate.scrape(&key, &base).await;
        }
    }
}

impl Estate {
    async fn check_health(&self, key: &Key, base: &str) {
        let request = self.request(reqwest::Method::GET, base, "/actuator/health");
        let outcome = self.send(request).await;
        let (health, body, error) = match outcome {
            Ok((status, body)) => match serde_json::from_slice::<Value>(&body) {
                Ok(doc) => {
                    let health = doc["status"].as_str().unwrap_or("UNKNOWN").to_owned();
                    (health, Some(doc), None)
                }
                Err(_) => (
                    if status.is_success() { "UP" } else { "DOWN" }.to_owned(),
                    None,
                    Some(format!("/actuator/health answered {status}, not JSON")),
                ),
            },
            Err(error) => ("UNREACHABLE".to_owned(), None, Some(error)),
        };
        let mut tracked = self.tracked();
        let Some(t) = tracked.get_mut(key) else {
            return;
        };
        let changed = t.health != health || t.error != error;
        t.health = health;
        t.health_body = body;
        t.error = error;
        t.checked = Some(SystemTime::now());
        drop(tracked);
        if changed {
            self.changed();
        }
    }

    async fn read_info(&self, key: &Key, base: &str) {
        let Ok(info) = self.get_json(base, "/actuator/info").await else {
            return;
        };
        let version = ["/build/version", "/app/version", "/version"]
            .iter()
            .find_map(|p| info.pointer(p).and_then(Value::as_str))
            .map(|v| v.chars().take(64).collect::<String>());
        if let Some(version) = version
            && let Some(t) = self.tracked().get_mut(key)
        {
            t.version = Some(version);
        }
    }

    async fn scrape(&self, key: &Key, base: &str) {
        let request = self
            .request(reqwest::Method::GET, base, "/actuator/prometheus")
            .header(http::header::ACCEPT, "text/plain");
        let Ok((status, body)) = self.send(request).await else {
            return;
        };
        if !status.is_success() {
            return;
        }
        let scrape = scrape::parse(&String::from_utf8_lossy(&body));
        let now = Instant::now();
        let history = self.inner.config.history;
        let mut tracked = self.tracked();
        let Some(t) = tracked.get_mut(key) else {
            return;
        };
        let at = now_ms();
        for (name, state) in &scrape.breakers {
            match t.breakers.get_mut(name) {
                Some(breaker) if breaker.state != *state => {
                    if breaker.transitions.len() == TRANSITIONS {
                        breaker.transitions.pop_front();
                    }
                    breaker.transitions.push_back(Transition {
                        at_ms: at,
                        from: std::mem::replace(&mut breaker.state, state.clone()),
                        to: state.clone(),
                    });
                    breaker.since_ms = at;
                }
                Some(_) => {}
                None => {
                    t.breakers.insert(
                        name.clone(),
                        Breaker {
                            state: state.clone(),
                            since_ms: at,
                            transitions: VecDeque::new(),
                        },
                    );
                }
            }
        }
        t.breakers
            .retain(|name, _| scrape.breakers.contains_key(name));
        t.started = scrape.started.or(t.started);
        t.rss = scrape.rss;
        if let Some((then, before)) = t.recent.back() {
            let seconds = now.duration_since(*then).as_secs_f64();
            let point = Window::between(&before.server, &scrape.server, seconds);
            if t.history.len() >= history {
                t.history.pop_front();
            }
            t.history.push_back(Point {
                at_ms: at,
                rate: point.rate,
                error_pct: point.error_pct,
                p99_ms: point.p99_ms,
                rss: t.rss,
            });
        }
        while t.recent.len() >= RECENT
            || t.recent.len() > 1
                && t.recent
                    .get(1)
                    .is_some_and(|(then, _)| now.duration_since(*then) >= WINDOW)
        {
            t.recent.pop_front();
        }
        if let Some((then, before)) = t.recent.front() {
            let seconds = now.duration_since(*then).as_secs_f64();
            t.window = Window::between(&before.server, &scrape.server, seconds);
            let empty = Histogram::default();
            t.calls = scrape
                .calls
                .iter()
                .map(|(target, after)| {
                    let before = before.calls.get(target).unwrap_or(&empty);
                    (target.clone(), Window::between(before, after, seconds))
                })
                .collect();
        }
        t.recent.push_back((now, scrape));
        drop(tracked);
        self.changed();
    }
}
