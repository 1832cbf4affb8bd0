//! The registry's state: instances and their leases, status overrides, the recent-change
//! queue behind `/apps/delta`, and self-preservation.
//!
//! Time is `tokio::time::Instant`, so tests drive leases with `tokio::time::pause()`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use msa_core::InstanceStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::eureka::{
    ActionType, Application, Applications, FlexU64, InstanceInfo, InvalidInstance, LeaseInfo,
    apps_hashcode,
};

/// Why metadata was not set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// No such instance.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The instance's metadata would be larger than the registry takes.
    #[error("the metadata would be {size} bytes; the limit is {limit}")]
    TooLarge {
        /// What it would be.
        size: usize,
        /// [`StoreConfig::max_metadata_bytes`].
        limit: usize,
    },
}

/// The registry's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// The lease an instance gets when it declares none: 30 s.
    pub default_lease: Duration,
    /// The renewal interval assumed when an instance declares none: 10 s.
    pub default_renewal_interval: Duration,
    /// Stop evicting when renewals in the last minute fall below this share of those
    /// expected (a network partition, not dead instances): true.
    pub self_preservation: bool,
    /// The share: 0.85, as Eureka.
    pub renewal_percent_threshold: f64,
    /// How long changes stay in the delta: 3 minutes, as Eureka.
    pub delta_retention: Duration,
    /// The most changes the delta keeps, however recent: 16,384. A client whose delta
    /// misses some finds the hash code does not reconcile and fetches everything.
    pub max_delta: usize,
    /// The longest lease (and renewal interval) an instance gets, whatever it declares:
    /// 1 hour.
    pub max_lease: Duration,
    /// The most instances the registry holds: 20,000. Past it, a new instance's
    /// registration is refused (400, with the reason).
    pub max_instances: usize,
    /// The most bytes of metadata (keys and values) one instance may carry: 16 KiB.
    pub max_metadata_bytes: usize,
    /// The longest instance id, application name, host name or address: 256 bytes.
    pub max_field_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            default_lease: Duration::from_secs(30),
            default_renewal_interval: Duration::from_secs(10),
            self_preservation: true,
            renewal_percent_threshold: 0.85,
            delta_retention: Duration::from_secs(180),
            max_delta: 16_384,
            max_lease: Duration::from_secs(3600),
            max_instances: 20_000,
            max_metadata_bytes: 16 * 1024,
            max_field_bytes: 256,
        }
    }
}

/// No such instance (the client should register again).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no instance {id:?} of {app}")]
pub struct NotFound {
    /// The application, upper-case.
    pub app: String,
    /// The instance id.
    pub id: String,
}

#[derive(Debug)]
struct Lease {
    info: InstanceInfo,
    duration: Duration,
    renewal_interval: Duration,
    registered: Instant,
    last_renewal: Instant,
}

impl Lease {
    fn expired(&self, now: Instant) -> bool {
        // At last renewal + duration: not Eureka's doubled expiry. (Leases are clamped to
        // `max_lease` when registered; an instant past the clock's range never expires.)
        self.last_renewal
            .checked_add(self.duration)
            .is_some_and(|expiry| now >= expiry)
    }
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, BTreeMap<String, Lease>>,
    changes: VecDeque<(Instant, InstanceInfo)>,
    /// Renewals of the last minute, for self-preservation.
    renewals: Renewals,
    preserving: bool,
    /// The registry version of each application's last change (the native watch's index):
    /// every registered application's, and those of at most [`GONE_KEPT`] gone ones.
    modified: BTreeMap<String, u64>,
}

/// How many applications with no instances left keep their last change's version (a
/// watcher of one that comes back sees its index move on); past it, the oldest are
/// forgotten, so names that come and go cannot grow the map.
const GONE_KEPT: usize = 1024;

/// The registry's instances, shared by the HTTP handlers and the eviction sweep.
#[derive(Clone, Debug)]
pub struct Store {
    state: Arc<RwLock<State>>,
    config: Arc<StoreConfig>,
    version: Arc<watch::Sender<u64>>,
}

/// A handle that does not keep the store alive (for background tasks).
#[derive(Clone, Debug)]
pub(crate) struct WeakStore {
    state: Weak<RwLock<State>>,
    config: Arc<StoreConfig>,
    version: Arc<watch::Sender<u64>>,
}

impl WeakStore {
    pub(crate) fn upgrade(&self) -> Option<Store> {
        Some(Store {
            state: self.state.upgrade()?,
            config: Arc::clone(&self.config),
            version: Arc::clone(&self.version),
        })
    }
}

/// Forgets the oldest versions of applications that have no instances, down to half of
/// [`GONE_KEPT`].
fn forget_gone(state: &mut State) {
    let mut gone: Vec<(u64, String)> = state
        .modified
        .iter()
        .filter(|(app, _)| !state.apps.contains_key(*app))
        .map(|(app, version)| (*version, app.clone()))
        .collect();
    gone.sort_unstable();
    let excess = gone.len().saturating_sub(GONE_KEPT / 2);
    for (_, app) in gone.into_iter().take(excess) {
        state.modified.remove(&app);
    }
}

/// Renewals counted per second over the last minute: constant memory and time however
/// many heartbeats arrive.
#[derive(Debug)]
struct Renewals {
    epoch: Instant,
    /// Counts per second, indexed by second % 60.
    buckets: [u32; 60],
    /// The second (since `epoch`) the newest bucket counts.
    newest: u64,
}

impl Default for Renewals {
    fn default() -> Self {
        Renewals {
            epoch: Instant::now(),
            buckets: [0; 60],
            newest: 0,
        }
    }
}

impl Renewals {
    /// Moves the window to `now`, clearing the seconds that passed.
    fn advance(&mut self, now: Instant) -> u64 {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        if second > self.newest {
            let stale = (second - self.newest).min(60);
            for step in 1..=stale {
                self.buckets[((self.newest + step) % 60) as usize] = 0;
            }
            self.newest = second;
        }
        second
    }

    fn record(&mut self, now: Instant) {
        let second = self.advance(now);
        let bucket = &mut self.buckets[(second % 60) as usize];
        *bucket = bucket.saturating_add(1);
    }

    /// Renewals in the last minute.
    fn last_minute(&mut self, now: Instant) -> u64 {
        self.advance(now);
        self.buckets.iter().map(|n| u64::from(*n)).sum()
    }
}

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn secs(d: FlexU64) -> Option<Duration> {
    (d.0 > 0).then(|| Duration::from_secs(d.0))
}

impl Store {
    /// An empty registry.
    pub fn new(config: StoreConfig) -> Self {
        Store {
            state: Arc::default(),
            config: Arc::new(config),
            version: Arc::new(watch::Sender::new(0)),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore {
            state: Arc::downgrade(&self.state),
            config: Arc::clone(&self.config),
            version: Arc::clone(&self.version),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        msa_core::sync::read(&self.state)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        msa_core::sync::write(&self.state)
    }

    /// A receiver of the registry's version, bumped on every change (the native watch).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// The version of `app`'s last change (0: never registered): what the native watch
    /// compares a client's index with.
    pub fn index(&self, app: &str) -> u64 {
        self.read()
            .modified
            .get(&app.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }

    /// `app`'s instances in msa's model (all statuses; the balancer picks UP ones).
    pub fn instances(&self, app: &str) -> Vec<msa_core::ServiceInstance> {
        self.application(app)
            .map(|a| {
                a.instance
                    .iter()
                    .map(InstanceInfo::to_service_instance)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a change: in the delta queue, and as a new version.
    fn changed(&self, state: &mut State, mut info: InstanceInfo, action: ActionType, now: Instant) {
        info.action_type = Some(action);
        state.modified.insert(info.app.clone(), self.version() + 1);
        if state.modified.len() > state.apps.len() + GONE_KEPT {
            forget_gone(state);
        }
        state.changes.push_back((now, info));
        while state.changes.len() > self.config.max_delta
            || state
                .changes
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > self.config.delta_retention)
        {
            state.changes.pop_front();
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Refuses a registration past the registry's limits: field and metadata sizes, and
    /// (for an instance not registered yet) the instance count.
    fn check_limits(
        &self,
        state: &State,
        app: &str,
        info: &InstanceInfo,
    ) -> Result<(), InvalidInstance> {
        let config = &self.config;
        for (what, value) in [
            ("instanceId", &info.instance_id),
            ("app", &info.app),
            ("hostName", &info.host_name),
            ("ipAddr", &info.ip_addr),
        ] {
            if value.len() > config.max_field_bytes {
                return Err(InvalidInstance::TooLarge {
                    what,
                    size: value.len(),
                    limit: config.max_field_bytes,
                });
            }
        }
        let metadata: usize = info.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if metadata > config.max_metadata_bytes {
            return Err(InvalidInstance::TooLarge {
                what: "metadata",
                size: metadata,
                limit: config.max_metadata_bytes,
            });
        }
        let known = state
            .apps
            .get(app)
            .is_some_and(|instances| instances.contains_key(&info.instance_id));
        let count: usize = state.apps.values().map(BTreeMap::len).sum();
        if !known && count >= config.max_instances {
            return Err(InvalidInstance::Full {
                limit: config.max_instances,
            });
        }
        Ok(())
    }

    /// Registers (or re-registers) an instance of `app`.
    pub fn register(&self, app: &str, mut info: InstanceInfo) -> Result<(), InvalidInstance> {
        info.validate_for(app)?;
        let app = app.to_ascii_uppercase();
        info.app.clone_from(&app);
        let now = Instant::now();
        let stamp = millis_now();
        let lease = info.lease_info.clone().unwrap_or_default();
        let max = self.config.max_lease;
        let duration = secs(lease.duration_in_secs)
            .unwrap_or(self.config.default_lease)
            .min(max);
        let renewal_interval = secs(lease.renewal_interval_in_secs)
            .unwrap_or(self.config.default_renewal_interval)
            .min(max);
        let mut state = self.write();
        self.check_limits(&state, &app, &info)?;
        let instances = state.apps.entry(app).or_default();
        let existing = instances.remove(&info.instance_id);
        // An operator's override survives a re-registration, as in Eureka.
        if let Some(existing) = &existing
            && existing.info.overridden_status != InstanceStatus::Unknown
        {
            info.overridden_status = existing.info.overridden_status;
        }
        info.lease_info = Some(LeaseInfo {
            renewal_interval_in_secs: FlexU64(renewal_interval.as_secs()),
            duration_in_secs: FlexU64(duration.as_secs()),
            registration_timestamp: FlexU64(stamp),
            last_renewal_timestamp: FlexU64(stamp),
            eviction_timestamp: FlexU64(0),
            service_up_timestamp: FlexU64(if info.status == InstanceStatus::Up {
                stamp
            } else {
                0
            }),
        });
        info.last_updated_timestamp = FlexU64(stamp);
        let action = if existing.is_some() {
            ActionType::Modified
        } else {
            ActionType::Added
        };
        instances.insert(
            info.instance_id.clone(),
            Lease {
                info: info.clone(),
                duration,
                renewal_interval,
                registered: now,
                last_renewal: now,
            },
        );
        self.changed(&mut state, info, action, now);
        Ok(())
    }

    fn lease_mut<'s>(state: &'s mut State, app: &str, id: &str) -> Result<&'s mut Lease, NotFound> {
        state
            .apps
            .get_mut(&app.to_ascii_uppercase())
            .and_then(|instances| instances.get_mut(id))
            .ok_or_else(|| NotFound {
                app: app.to_ascii_uppercase(),
                id: id.to_owned(),
            })
    }

    /// Renews a lease. 404 (`NotFound`) for an unknown instance, or when the client's
    /// `last_dirty` is newer than the server's copy: either way the client registers again.
    pub fn renew(&self, app: &str, id: &str, last_dirty: Option<u64>) -> Result<(), NotFound> {
        self.renew_reporting(app, id, last_dirty, None).map(drop)
    }

    /// Renews a lease as [`renew`](Self::renew) does, and takes the client's reported
    /// `status` (a heartbeat's `?status=`) under the same lock, recording a change only
    /// when the status differs; whether it did.
    pub fn renew_reporting(
        &self,
        app: &str,
        id: &str,
        last_dirty: Option<u64>,
        status: Option<InstanceStatus>,
    ) -> Result<bool, NotFound> {
        let now = Instant::now();
        let mut state = self.write();
        state.renewals.record(now);
        let lease = Self::lease_mut(&mut state, app, id)?;
        if last_dirty.is_some_and(|dirty| dirty > lease.info.last_dirty_timestamp.0) {
            return Err(NotFound {
                app: app.to_ascii_uppercase(),
                id: id.to_owned(),
            });
        }
        lease.last_renewal = now;
        let millis = millis_now();
        if let Some(info) = lease.info.lease_info.as_mut() {
            info.last_renewal_timestamp = FlexU64(millis);
        }
        if let Some(status) = status
            && lease.info.status != status
        {
            lease.info.status = status;
            lease.info.last_updated_timestamp = FlexU64(millis);
            let info = lease.info.clone();
            self.changed(&mut state, info, ActionType::Modified, now);
            return Ok(true);
        }
        Ok(false)
    }

    /// Removes an instance (deregistration).
    pub fn cancel(&self, app: &str, id: &str) -> Result<(), NotFound> {
        let now = Instant::now();
        let mut state = self.write();
        let app_key = app.to_ascii_uppercase();
        let lease = state
            .apps
            .get_mut(&app_key)
            .and_then(|instances| instances.remove(id))
            .ok_or_else(|| NotFound {
                app: app_key.clone(),
                id: id.to_owned(),
            })?;
        if state.apps.get(&app_key).is_some_and(BTreeMap::is_empty) {
            state.apps.remove(&app_key);
        }
        self.changed(&mut state, lease.info, ActionType::Deleted, now);
        Ok(())
    }

    /// Applies `f` to an instance's record and records it as modified.
    fn modify(
        &self,
        app: &str,
        id: &str,
        f: impl FnOnce(&mut InstanceInfo),
    ) -> Result<(), NotFound> {
        self.try_modify(app, id, |info| {
            f(info);
            Ok::<(), NotFound>(())
        })
    }

    /// [`modify`](Self::modify) with a change that may refuse (and then changes nothing).
    fn try_modify<E: From<NotFound>>(
        &self,
        app: &str,
        id: &str,
        f: impl FnOnce(&mut InstanceInfo) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        let mut state = self.write();
        let lease = Self::lease_mut(&mut state, app, id)?;
        f(&mut lease.info)?;
        lease.info.last_updated_timestamp = FlexU64(millis_now());
        let info = lease.info.clone();
        self.changed(&mut state, info, ActionType::Modified, now);
        Ok(())
    }

    /// Sets an operator's status override (`OUT_OF_SERVICE`, say).
    pub fn set_override(
        &self,
        app: &str,
        id: &str,
        status: InstanceStatus,
    ) -> Result<(), NotFound> {
        self.modify(app, id, |info| info.overridden_status = status)
    }

    /// Removes the override; the status becomes `value`, or UNKNOWN without one (Eureka's
    /// rule), until the client reports again.
    pub fn remove_override(
        &self,
        app: &str,
        id: &str,
        value: Option<InstanceStatus>,
    ) -> Result<(), NotFound> {
        self.modify(app, id, |info| {
            info.overridden_status = InstanceStatus::Unknown;
            info.status = value.unwrap_or(InstanceStatus::Unknown);
        })
    }

    /// Sets the client's own status (a heartbeat with `?status=`, or a status report).
    pub fn set_status(&self, app: &str, id: &str, status: InstanceStatus) -> Result<(), NotFound> {
        self.modify(app, id, |info| info.status = status)
    }

    /// Adds or replaces metadata entries; none of them when the instance's metadata would
    /// grow past [`StoreConfig::max_metadata_bytes`].
    pub fn set_metadata(
        &self,
        app: &str,
        id: &str,
        entries: &[(String, String)],
    ) -> Result<(), MetadataError> {
        let limit = self.config.max_metadata_bytes;
        self.try_modify(app, id, |info| {
            let mut merged = info.metadata.clone();
            merged.extend(entries.iter().cloned());
            let size: usize = merged.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > limit {
                return Err(MetadataError::TooLarge { size, limit });
            }
            info.metadata = merged;
            Ok(())
        })
    }

    /// The record as served: the effective status in `status`.
    fn served(info: &InstanceInfo) -> InstanceInfo {
        let mut served = info.clone();
        served.status = info.effective_status();
        served
    }

    /// One instance.
    pub fn instance(&self, app: &str, id: &str) -> Option<InstanceInfo> {
        let state = self.read();
        state
            .apps
            .get(&app.to_ascii_uppercase())
            .and_then(|instances| instances.get(id))
            .map(|lease| Self::served(&lease.info))
    }

    /// One instance's record as kept (its own status and the override apart), for a
    /// shared store to write.
    #[cfg(feature = "etcd")]
    pub(crate) fn record(&self, app: &str, id: &str) -> Option<(InstanceInfo, Duration)> {
        let state = self.read();
        state
            .apps
            .get(&app.to_ascii_uppercase())
            .and_then(|instances| instances.get(id))
            .map(|lease| (lease.info.clone(), lease.duration))
    }

    /// Takes a record from a shared store (etcd) as it is: added or modified, and never
    /// expiring here (the shared store expires it).
    #[cfg(feature = "etcd")]
    pub(crate) fn mirror(&self, info: InstanceInfo) {
        let now = Instant::now();
        let mut state = self.write();
        let instances = state.apps.entry(info.app.clone()).or_default();
        let action = match instances.get(&info.instance_id) {
            Some(known) if known.info == info => return,
            Some(_) => ActionType::Modified,
            None => ActionType::Added,
        };
        let lease = info.lease_info.clone().unwrap_or_default();
        instances.insert(
            info.instance_id.clone(),
            Lease {
                info: info.clone(),
                duration: secs(lease.duration_in_secs).unwrap_or(self.config.default_lease),
                renewal_interval: secs(lease.renewal_interval_in_secs)
                    .unwrap_or(self.config.default_renewal_interval),
                registered: now,
                last_renewal: now,
            },
        );
        self.changed(&mut state, info, action, now);
    }

    /// Every record's key (application, id), for a shared store to reconcile with.
    #[cfg(feature = "etcd")]
    pub(crate) fn keys(&self) -> Vec<(String, String)> {
        let state = self.read();
        state
            .apps
            .iter()
            .flat_map(|(app, instances)| instances.keys().map(|id| (app.clone(), id.clone())))
            .collect()
    }

    /// One instance by id alone (`GET /instances/{id}`).
    pub fn find(&self, id: &str) -> Option<InstanceInfo> {
        let state = self.read();
        state
            .apps
            .values()
            .find_map(|instances| instances.get(id))
            .map(|lease| Self::served(&lease.info))
    }

    /// One application.
    pub fn application(&self, app: &str) -> Option<Application> {
        let state = self.read();
        state
            .apps
            .get(&app.to_ascii_uppercase())
            .map(|instances| Application {
                name: app.to_ascii_uppercase(),
                instance: instances.values().map(|l| Self::served(&l.info)).collect(),
            })
    }

    /// The whole registry, with its hash.
    pub fn applications(&self) -> Applications {
        let state = self.read();
        let application: Vec<Application> = state
            .apps
            .iter()
            .map(|(name, instances)| Application {
                name: name.clone(),
                instance: instances.values().map(|l| Self::served(&l.info)).collect(),
            })
            .collect();
        Applications {
            versions_delta: self.version().to_string(),
            apps_hashcode: apps_hashcode(
                application
                    .iter()
                    .flat_map(|a| a.instance.iter().map(|i| i.status)),
            ),
            application,
        }
    }

    /// The changes of the last few minutes, each with its `actionType`; the hash is the
    /// whole registry's, so that clients can check what they rebuilt.
    pub fn delta(&self) -> Applications {
        let full_hash = self.applications().apps_hashcode;
        let state = self.read();
        let mut by_app: BTreeMap<String, Vec<InstanceInfo>> = BTreeMap::new();
        for (_, info) in &state.changes {
            by_app
                .entry(info.app.clone())
                .or_default()
                .push(Self::served(info));
        }
        Applications {
            versions_delta: self.version().to_string(),
            apps_hashcode: full_hash,
            application: by_app
                .into_iter()
                .map(|(name, instance)| Application { name, instance })
                .collect(),
        }
    }

    /// Whether self-preservation holds evictions back now.
    pub fn self_preservation_active(&self) -> bool {
        self.read().preserving
    }

    /// Renewals a minute the leases at least a minute old are expected to send (Eureka's
    /// expected renewals, before the threshold).
    fn expected_renewals(state: &State, now: Instant) -> f64 {
        state
            .apps
            .values()
            .flat_map(BTreeMap::values)
            .filter(|l| now.duration_since(l.registered) >= Duration::from_secs(60))
            .map(|l| 60.0 / l.renewal_interval.as_secs_f64().max(1.0))
            .sum()
    }

    /// For a shared store's self-preservation: the renewals this registry took in the
    /// last minute.
    #[cfg(feature = "etcd")]
    pub(crate) fn renewals_last_minute(&self) -> u64 {
        self.write().renewals.last_minute(Instant::now())
    }

    /// For a shared store's self-preservation: the renewals a minute its leases (at least
    /// a minute old) are expected to send.
    #[cfg(feature = "etcd")]
    pub(crate) fn expected_renewals_now(&self) -> f64 {
        Self::expected_renewals(&self.read(), Instant::now())
    }

    /// The settings self-preservation follows.
    #[cfg(feature = "etcd")]
    pub(crate) fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Each record's key, lease duration and renewal interval, for a shared store.
    #[cfg(feature = "etcd")]
    pub(crate) fn lease_timings(&self) -> Vec<((String, String), Duration, Duration)> {
        let state = self.read();
        state
            .apps
            .iter()
            .flat_map(|(app, instances)| {
                instances.iter().map(|(id, lease)| {
                    (
                        (app.clone(), id.clone()),
                        lease.duration,
                        lease.renewal_interval,
                    )
                })
            })
            .collect()
    }

    /// Self-preservation as a shared store decided it (this registry does not evict).
    #[cfg(feature = "etcd")]
    pub(crate) fn set_preserving(&self, preserving: bool) {
        let mut state = self.write();
        if state.preserving != preserving {
            state.preserving = preserving;
            match preserving {
                true => tracing::warn!("self-preservation engaged (decided in etcd)"),
                false => tracing::info!("self-preservation released (decided in etcd)"),
            }
        }
    }

    /// Evicts expired leases (unless self-preservation holds); returns those evicted. Run
    /// it every second.
    ///
    /// Self-preservation, as Eureka's, holds evictions back when renewals in the last
    /// minute fall below 85% of those expected: many leases lapsing at once looks like a
    /// network partition, not dead instances. Two refinements keep it from the usual
    /// surprises: only leases at least a minute old count toward the expected renewals (a
    /// fresh registry does not preserve), and it engages only when more than one lease has
    /// lapsed (a single dead instance is evicted, however small the registry).
    pub fn evict(&self) -> Vec<InstanceInfo> {
        let now = Instant::now();
        let mut state = self.write();
        let renewals = state.renewals.last_minute(now);
        let expected = Self::expected_renewals(&state, now);
        let lapsed = state
            .apps
            .values()
            .flat_map(BTreeMap::values)
            .filter(|l| l.expired(now))
            .count();
        let preserving = self.config.self_preservation
            && lapsed > 1
            && (renewals as f64) < (expected * self.config.renewal_percent_threshold).floor();
        if preserving != state.preserving {
            state.preserving = preserving;
            if preserving {
                tracing::warn!(
                    renewals,
                    expected = expected as u64,
                    lapsed,
                    "self-preservation engaged: renewals fell below {:.0}% of those expected; expired leases are kept",
                    self.config.renewal_percent_threshold * 100.0
                );
            } else {
                tracing::info!("self-preservation released");
            }
        }
        if preserving || lapsed == 0 {
            return Vec::new();
        }
        let mut evicted = Vec::new();
        for instances in state.apps.values_mut() {
            instances.retain(|_, lease| {
                let keep = !lease.expired(now);
                if !keep {
                    evicted.push(lease.info.clone());
                }
                keep
            });
        }
        state.apps.retain(|_, instances| !instances.is_empty());
        for info in &evicted {
            tracing::info!(app = %info.app, id = %info.instance_id, "lease expired; instance evicted");
            self.changed(&mut state, info.clone(), ActionType::Deleted, now);
        }
        evicted
    }
}
