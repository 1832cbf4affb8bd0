//! The client-side load balancer: a logical name (`http://orders/...`) becomes a live
//! instance.
//!
//! [`Balancer`] holds what is known about each instance of each service: it follows the
//! service's instances through a [`Discovery`] backend, chooses only `UP` instances that
//! are not ejected, prefers the caller's zone and a sticky instance when asked, and learns
//! from every outcome (latency, errors, 5xx). It is shared by the adapters:
//!
//! - [`LoadBalancerLayer`], a tower layer around any HTTP client service whose requests
//!   carry the instance's address in their URI: hyper-util's pooled `Client`, or a
//!   `reqwest` client behind `tower`.
//! - [`EndpointBalancer`], a tower service for clients bound to one address, such as a
//!   tonic `Channel`: one inner service per instance, made on first use.
//! - `LoadBalancerMiddleware` (feature `reqwest-middleware`), for `reqwest_middleware`
//!   client stacks.
//!
//! # Choosing
//!
//! 1. The service's `UP` instances, less those ejected as outliers (if every one is
//!    ejected, all of them: a guess beats a certain failure), less those this request has
//!    already failed to connect to.
//! 2. If [`BalancerConfig::zone`] is set and any candidate is in that zone, only those.
//! 3. If the request names a sticky key and it is a candidate's instance id, that one;
//!    any other key is hashed onto the candidates (rendezvous hashing, so a key moves only
//!    when its instance goes).
//! 4. Otherwise the [`Strategy`].
//!
//! # Examples
//!
//! ```
//! use msa_core::ServiceInstance;
//! use msa_discovery::balance::{Balancer, BalancerConfig, Strategy};
//! use msa_discovery::discovery::StaticDiscovery;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let discovery = StaticDiscovery::new([
//!     ServiceInstance::new("orders", "10.0.0.7", 8081),
//!     ServiceInstance::new("orders", "10.0.0.8", 8081),
//! ]);
//! let balancer = Balancer::new(discovery, BalancerConfig::default().with_strategy(Strategy::RoundRobin));
//! let first = balancer.pick("orders", None).unwrap();
//! let second = balancer.pick("orders", None).unwrap();
//! assert_ne!(first.instance().host, second.instance().host);
//! second.success();
//! # }
//! ```

mod config;
mod endpoint;
mod layer;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod per_endpoint;
mod replay;

pub use self::config::{BalancerConfig, OutlierConfig, Strategy};
pub use self::layer::{LoadBalancer, LoadBalancerLayer, ResponseFuture};
#[cfg(feature = "reqwest-middleware")]
pub use self::middleware::LoadBalancerMiddleware;
pub use self::per_endpoint::EndpointBalancer;
pub use self::replay::{ReplayBody, Unsent};

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use msa_core::ServiceInstance;
use tokio::sync::watch;
use tokio::time::Instant;

use self::endpoint::Stats;
use crate::discovery::{Discovery, Instances};

/// No instance of a service could be chosen.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no live instance of service {service:?} ({known} known, none UP)")]
pub struct NoInstance {
    /// The service asked for.
    pub service: String,
    /// How many instances discovery knows of, in any status.
    pub known: usize,
}

/// Chooses instances and learns from outcomes; see the [module docs](self). Cheap to
/// clone: clones share everything.
#[derive(Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
}

struct Shared {
    discovery: Box<dyn Discovery>,
    config: BalancerConfig,
    services: DashMap<String, Arc<ServiceState>>,
    epoch: Instant,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("discovery", &self.shared.discovery)
            .field("config", &self.shared.config)
            .field("services", &self.shared.services.len())
            .finish()
    }
}

struct ServiceState {
    name: String,
    receiver: watch::Receiver<Instances>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Stats by instance id, kept while the instance is listed.
    stats: Mutex<HashMap<String, Arc<Stats>>>,
    next: AtomicUsize,
    /// Whether discovery has said anything about the service yet.
    answered: std::sync::atomic::AtomicBool,
    /// Whether discovery has ever listed an instance of it.
    seen: std::sync::atomic::AtomicBool,
}

/// The most service names [`Balancer::is_service`] asks discovery about.
pub const MAX_PROBED: usize = 1024;

/// How long the first call to a service waits for discovery's first answer about it.
pub const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The `UP` instances of one list, with their stats.
struct Snapshot {
    source: Instances,
    /// Indexes into `source` of its UP instances, and their stats.
    up: Vec<(usize, Arc<Stats>)>,
}

impl Balancer {
    /// A balancer over `discovery`.
    pub fn new(discovery: impl Discovery, config: BalancerConfig) -> Self {
        Balancer {
            shared: Arc::new(Shared {
                discovery: Box::new(discovery),
                config,
                services: DashMap::new(),
                epoch: Instant::now(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BalancerConfig {
        &self.shared.config
    }

    /// Chooses an instance of `service` for one request. `sticky` is the request's sticky
    /// key, if any. Report the outcome on the [`Pick`]; dropping it unreported counts as
    /// a cancelled request (no lesson learned).
    pub fn pick(&self, service: &str, sticky: Option<&str>) -> Result<Pick, NoInstance> {
        self.pick_excluding(service, sticky, &[])
    }

    /// As [`pick`](Self::pick), never choosing the instances with these ids (while another
    /// candidate exists).
    pub fn pick_excluding(
        &self,
        service: &str,
        sticky: Option<&str>,
        exclude: &[&str],
    ) -> Result<Pick, NoInstance> {
        let state = self.state(service);
        let snapshot = state.snapshot(&self.shared);
        let now = Instant::now();
        let clock = Balancer::clock_of(&self.shared, now);
        let choice = choose(
            &self.shared.config,
            &state,
            &snapshot,
            now,
            clock,
            sticky,
            exclude,
        )
        .ok_or_else(|| NoInstance {
            service: service.to_owned(),
            known: snapshot.source.len(),
        })?;
        let stats = snapshot.up[choice].1.clone();
        stats.pending.fetch_add(1, Ordering::Relaxed);
        Ok(Pick {
            shared: self.shared.clone(),
            state,
            snapshot,
            slot: choice,
            stats,
            started: now,
        })
    }

    /// Waits, the first time `service` is asked for, until discovery has answered about
    /// it (at most [`FIRST_ANSWER_WAIT`]), so that calls made right after start do not fail
    /// for want of a list. Returns at once, with `false`, once discovery has answered.
    pub async fn discovered(&self, service: &str) -> bool {
        let state = self.state(service);
        if state.answered.load(Ordering::Acquire) {
            return false;
        }
        let mut receiver = state.receiver.clone();
        let _ = tokio::time::timeout(FIRST_ANSWER_WAIT, receiver.changed()).await;
        state.answered.store(true, Ordering::Release);
        true
    }

    /// Whether `service` is a service discovery knows: one it lists (or has listed)
    /// instances of. The first time a name is asked about, this waits for discovery's
    /// first answer (at most [`FIRST_ANSWER_WAIT`]) unless the backend can tell at once.
    /// Host names with a dot, a port, an IP address or `localhost` are never asked about
    /// by the adapters: they go out as they are.
    pub async fn is_service(&self, service: &str) -> bool {
        if let Some(known) = self.shared.discovery.knows(service) {
            return known;
        }
        // Each name asked about keeps a discovery watch: past MAX_PROBED names, a name not
        // asked about before is not a service (a host handed in from outside cannot make
        // the balancer follow names without bound).
        if self.shared.services.len() >= MAX_PROBED
            && !self
                .shared
                .services
                .contains_key(&service.to_ascii_lowercase())
        {
            return false;
        }
        let state = self.state(service);
        if state.seen.load(Ordering::Acquire) || !state.receiver.borrow().is_empty() {
            state.seen.store(true, Ordering::Release);
            return true;
        }
        self.discovered(service).await;
        let listed = !state.receiver.borrow().is_empty();
        if listed {
            state.seen.store(true, Ordering::Release);
        }
        listed
    }

    fn state(&self, service: &str) -> Arc<ServiceState> {
        // One state per service however it is spelled (names are case-insensitive); the
        // common lower-case spelling is looked up without allocating.
        let folded;
        let service = if service.bytes().any(|b| b.is_ascii_uppercase()) {
            folded = service.to_ascii_lowercase();
            folded.as_str()
        } else {
            service
        };
        if let Some(state) = self.shared.services.get(service) {
            return state.clone();
        }
        let key = service.to_owned();
        self.shared
            .services
            .entry(service.to_owned())
            .or_insert_with(|| {
                let receiver = self.shared.discovery.watch(&key);
                let source = receiver.borrow().clone();
                let state = ServiceState {
                    name: key,
                    receiver,
                    snapshot: RwLock::new(Arc::new(Snapshot {
                        source: Vec::new().into(),
                        up: Vec::new(),
                    })),
                    stats: Mutex::default(),
                    next: AtomicUsize::new(0),
                    answered: std::sync::atomic::AtomicBool::new(!source.is_empty()),
                    seen: std::sync::atomic::AtomicBool::new(!source.is_empty()),
                };
                state.rebuild(&self.shared, source);
                Arc::new(state)
            })
            .clone()
    }
}

impl ServiceState {
    /// The current snapshot, rebuilt first if discovery's list changed.
    fn snapshot(&self, shared: &Shared) -> Arc<Snapshot> {
        let current = msa_core::sync::read(&self.snapshot).clone();
        let latest = self.receiver.borrow();
        if Arc::ptr_eq(&latest, &current.source) {
            return current;
        }
        let latest = latest.clone();
        self.rebuild(shared, latest)
    }

    fn rebuild(&self, shared: &Shared, source: Instances) -> Arc<Snapshot> {
        let now = Instant::now();
        let mut stats = msa_core::sync::lock(&self.stats);
        // Newcomers start at the mean cost of the instances already measured, so they
        // neither flood (cost zero) nor starve (a cold default far above the others).
        let initial = if stats.is_empty() {
            shared.config.default_rtt
        } else {
            let sum: f64 = stats
                .values()
                .map(|s| s.cost_ns(now, shared.config.decay))
                .sum();
            Duration::from_nanos((sum / stats.len() as f64) as u64)
        };
        let mut kept = HashMap::with_capacity(source.len());
        let mut up = Vec::with_capacity(source.len());
        for (index, instance) in source.iter().enumerate() {
            let entry = stats
                .remove(&instance.id)
                .or_else(|| kept.get(&instance.id).cloned())
                .unwrap_or_else(|| Arc::new(Stats::new(initial, now)));
            kept.insert(instance.id.clone(), entry.clone());
            if instance.status.is_up() {
                up.push((index, entry));
            }
        }
        *stats = kept;
        let snapshot = Arc::new(Snapshot { source, up });
        *msa_core::sync::write(&self.snapshot) = snapshot.clone();
        snapshot
    }
}

/// Picks a slot of `snapshot.up`, or none when nothing is UP.
fn choose(
    config: &BalancerConfig,
    state: &ServiceState,
    snapshot: &Snapshot,
    now: Instant,
    clock: u64,
    sticky: Option<&str>,
    exclude: &[&str],
) -> Option<usize> {
    let up = &snapshot.up;
    if up.is_empty() {
        return None;
    }
    let instance = |slot: usize| &snapshot.source[up[slot].0];
    // Candidates: not ejected and not excluded; relaxed level by level while none is.
    let eligible = |slot: usize, level: u8| match level {
        0 => !up[slot].1.is_ejected(clock) && !exclude.contains(&instance(slot).id.as_str()),
        1 => !exclude.contains(&instance(slot).id.as_str()),
        _ => true,
    };
    let level = (0..2)
        .find(|level| (0..up.len()).any(|slot| eligible(slot, *level)))
        .unwrap_or(2);
    let zone = config.zone.as_deref();
    let in_zone = |slot: usize| zone.is_some() && instance(slot).zone.as_deref() == zone;
    let zoned = (0..up.len()).any(|slot| eligible(slot, level) && in_zone(slot));
    let candidate = |slot: usize| eligible(slot, level) && (!zoned || in_zone(slot));
    let slots = || (0..up.len()).filter(|slot| candidate(*slot));
    let count = slots().count();

    if let Some(key) = sticky {
        if let Some(slot) = slots().find(|slot| instance(*slot).id == key) {
            return Some(slot);
        }
        return slots().max_by_key(|slot| rendezvous(key, &instance(*slot).id));
    }
    match config.strategy {
        Strategy::RoundRobin => {
            let n = state.next.fetch_add(1, Ordering::Relaxed);
            slots().nth(n % count)
        }
        Strategy::WeightedRandom => {
            let total: u64 = slots()
                .map(|slot| u64::from(instance(slot).weight.max(1)))
                .sum();
            let mut point = fastrand::u64(0..total);
            for slot in slots() {
                let weight = u64::from(instance(slot).weight.max(1));
                if point < weight {
                    return Some(slot);
                }
                point -= weight;
            }
            None
        }
        Strategy::P2cEwma => {
            if count == 1 {
                return slots().next();
            }
            let a = fastrand::usize(0..count);
            let mut b = fastrand::usize(0..count - 1);
            if b >= a {
                b += 1;
            }
            let a = slots().nth(a)?;
            let b = slots().nth(b)?;
            let load = |slot: usize| up[slot].1.load(now, config.decay);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

fn rendezvous(key: &str, id: &str) -> u64 {
    // A fixed-key SipHash: the same key and id hash alike in every process.
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    key.hash(&mut hasher);
    id.hash(&mut hasher);
    hasher.finish()
}

/// One chosen instance for one request. Report how it went with [`success`](Self::success)
/// or [`failure`](Self::failure); the latency counted is the time since the pick.
pub struct Pick {
    shared: Arc<Shared>,
    state: Arc<ServiceState>,
    snapshot: Arc<Snapshot>,
    slot: usize,
    stats: Arc<Stats>,
    started: Instant,
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("instance", self.instance())
            .finish_non_exhaustive()
    }
}

impl Pick {
    /// The instance chosen.
    pub fn instance(&self) -> &ServiceInstance {
        &self.snapshot.source[self.snapshot.up[self.slot].0]
    }

    /// How many other instances could have been chosen (UP, not ejected).
    pub fn alternatives(&self) -> usize {
        let clock = Balancer::clock_of(&self.shared, Instant::now());
        self.snapshot
            .up
            .iter()
            .enumerate()
            .filter(|(slot, (_, stats))| *slot != self.slot && !stats.is_ejected(clock))
            .count()
    }

    /// The request succeeded (any answer but a 5xx).
    pub fn success(self) {
        let now = Instant::now();
        let config = &self.shared.config;
        self.stats.observe(now, now - self.started, config.decay);
        self.stats.succeeded(
            Balancer::clock_of(&self.shared, now),
            config.outlier.base_ejection_time,
        );
    }

    /// The request failed: an error, or a 5xx answer. Counts toward outlier ejection, and
    /// as at least [`BalancerConfig::failure_penalty`] of latency.
    pub fn failure(self) {
        let now = Instant::now();
        let config = &self.shared.config;
        let rtt = (now - self.started).max(config.failure_penalty);
        self.stats.observe(now, rtt, config.decay);
        let outlier = &config.outlier;
        if outlier.consecutive_failures == 0 || self.stats.failed() < outlier.consecutive_failures {
            return;
        }
        let clock = Balancer::clock_of(&self.shared, now);
        let live = self.snapshot.up.len();
        let ejected = self
            .snapshot
            .up
            .iter()
            .filter(|(_, stats)| stats.is_ejected(clock))
            .count();
        let allowed = live * usize::from(outlier.max_ejection_percent.min(100)) / 100;
        if ejected >= allowed {
            tracing::debug!(service = %self.state.name, instance = %self.instance().id,
                "not ejecting: {ejected} of {live} instances are ejected already");
            return;
        }
        if let Some(length) =
            self.stats
                .eject(clock, outlier.base_ejection_time, outlier.max_ejection_time)
        {
            tracing::warn!(service = %self.state.name, instance = %self.instance().id,
                ejected_for = ?length, "instance ejected after {} failures in a row",
                outlier.consecutive_failures);
        }
    }
}

impl Balancer {
    fn clock_of(shared: &Shared, now: Instant) -> u64 {
        now.saturating_duration_since(shared.epoch).as_millis() as u64
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
