//! The registry's etcd store: [`EtcdStore`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msa_core::etcd::etcd_client::{Client, EventType, GetOptions, PutOptions};
use msa_core::etcd::{EtcdError, LazyClient, Update};

use super::store::Store;
use crate::eureka::InstanceInfo;

/// The largest record read from etcd; larger ones are skipped.
const MAX_VALUE: usize = 256 << 10;

/// How often each replica shares its renewal count, and the preserver decides.
const PRESERVATION_EVERY: Duration = Duration::from_secs(1);

/// How long a replica's shared renewal count outlives the replica.
const COUNT_TTL: i64 = 5;

/// The registry's instances kept in etcd (`msa-registry --store etcd://...`), so that any
/// number of registry replicas serve the same registry and any of them may die.
///
/// Key layout (the prefix is `/msa` unless set otherwise):
///
/// ```text
/// /msa/registry/<APP>/<instance id>  →  the instance's Eureka record (JSON), bound to a lease
///                                       of the instance's lease duration
/// ```
///
/// Self-preservation is decided from etcd's view, the same for every replica: each replica
/// shares its renewals of the last minute under `/msa/registry-meta/renewals/<replica>`
/// every second (under a 5 s lease, so a dead replica's count goes with it), and one
/// replica, elected through etcd (`/msa/elections/msa-registry/msa`), adds them up. When
/// the estate's renewals fall below 85 % of those expected and more than one lease has
/// gone two renewal intervals without a renewal, it engages: it keeps every lease alive
/// itself, so etcd expires none, until the renewals are back above the threshold. The
/// decision is shared as `/msa/registry-meta/preserving` and shown by every replica.
///
/// A replica writes through to etcd — a registration grants a lease and puts the record
/// under it, a renewal keeps that lease alive, a cancellation revokes it, a status or
/// metadata change puts the record again under the same lease — and serves reads from its
/// own copy, which a watch of the prefix keeps in step with etcd (the copy of every
/// replica, so a registration on one is seen on all within milliseconds). Leases expire in
/// etcd, which deletes their records for every replica at once; a replica never evicts on
/// its own.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: LazyClient,
    prefix: String,
    /// Where the replicas share self-preservation (`<prefix>/registry-meta/`).
    meta: String,
    /// This replica, among those sharing the store.
    replica: String,
    /// The lease of each record, as etcd's watch reported it.
    leases: Mutex<HashMap<(String, String), i64>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store in the etcd cluster at `url` (`etcd://host:port[,host:port...]`), under the
    /// default prefix `/msa`. Connects on first use.
    pub fn new(url: &str) -> Result<EtcdStore, EtcdError> {
        Ok(Self::with_client(
            LazyClient::new(url)?,
            crate::etcd::PREFIX,
        ))
    }

    /// A store through `client` under `prefix`.
    pub fn with_client(client: impl Into<LazyClient>, prefix: &str) -> EtcdStore {
        EtcdStore {
            inner: Arc::new(Inner {
                client: client.into(),
                prefix: format!("{}/registry/", prefix.trim_end_matches('/')),
                meta: format!("{}/registry-meta/", prefix.trim_end_matches('/')),
                replica: format!("{:016x}", fastrand::u64(..)),
                leases: Mutex::default(),
            }),
        }
    }

    fn key(&self, app: &str, id: &str) -> String {
        format!("{}{}/{id}", self.inner.prefix, app.to_ascii_uppercase())
    }

    fn lease_of(&self, app: &str, id: &str) -> Option<i64> {
        msa_core::sync::lock(&self.inner.leases)
            .get(&(app.to_ascii_uppercase(), id.to_owned()))
            .copied()
    }

    /// The lease of a record: as the watch said, else as etcd says now.
    async fn find_lease(
        &self,
        client: &mut Client,
        app: &str,
        id: &str,
    ) -> Result<Option<i64>, EtcdError> {
        if let Some(lease) = self.lease_of(app, id) {
            return Ok(Some(lease));
        }
        let answer = client.get(self.key(app, id), None).await?;
        Ok(answer.kvs().first().map(|kv| kv.lease()))
    }

    /// Puts `info` under a new lease of `duration` (a registration). The lease of an
    /// earlier registration of the same instance is revoked.
    pub(crate) async fn register(
        &self,
        info: &InstanceInfo,
        duration: Duration,
    ) -> Result<(), EtcdError> {
        self.inner
            .client
            .retrying(|client| self.try_register(client, info, duration))
            .await
    }

    async fn try_register(
        &self,
        mut client: Client,
        info: &InstanceInfo,
        duration: Duration,
    ) -> Result<(), EtcdError> {
        let earlier = self.lease_of(&info.app, &info.instance_id);
        let ttl = i64::try_from(duration.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = client.lease_grant(ttl, None).await?.id();
        let value = serde_json::to_vec(info).unwrap_or_default();
        client
            .put(
                self.key(&info.app, &info.instance_id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        self.remember(&info.app, &info.instance_id, Some(lease));
        if let Some(earlier) = earlier.filter(|e| *e != lease) {
            // It held the same key; revoking it now deletes nothing.
            let _ = client.lease_revoke(earlier).await;
        }
        Ok(())
    }

    /// Puts a changed record under its current lease; `false` when etcd has no such
    /// record (its lease expired).
    pub(crate) async fn update(&self, info: &InstanceInfo) -> Result<bool, EtcdError> {
        self.inner
            .client
            .retrying(|client| self.try_update(client, info))
            .await
    }

    async fn try_update(&self, mut client: Client, info: &InstanceInfo) -> Result<bool, EtcdError> {
        let Some(lease) = self
            .find_lease(&mut client, &info.app, &info.instance_id)
            .await?
        else {
            return Ok(false);
        };
        let value = serde_json::to_vec(info).unwrap_or_default();
        client
            .put(
                self.key(&info.app, &info.instance_id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(true)
    }

    /// Renews an instance's lease; `false` when etcd has no such instance (the client
    /// registers again).
    pub(crate) async fn renew(&self, app: &str, id: &str) -> Result<bool, EtcdError> {
        self.inner
            .client
            .retrying(|client| self.try_renew(client, app, id))
            .await
    }

    async fn try_renew(&self, mut client: Client, app: &str, id: &str) -> Result<bool, EtcdError> {
        let Some(lease) = self.find_lease(&mut client, app, id).await? else {
            return Ok(false);
        };
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        let alive = answers
            .message()
            .await?
            .is_some_and(|answer| answer.ttl() > 0);
        if !alive {
            self.remember(app, id, None);
        }
        Ok(alive)
    }

    /// Deletes an instance (revokes its lease); `false` when etcd had none.
    pub(crate) async fn cancel(&self, app: &str, id: &str) -> Result<bool, EtcdError> {
        self.inner
            .client
            .retrying(|client| self.try_cancel(client, app, id))
            .await
    }

    async fn try_cancel(&self, mut client: Client, app: &str, id: &str) -> Result<bool, EtcdError> {
        match self.find_lease(&mut client, app, id).await? {
            Some(lease) if lease != 0 => {
                client.lease_revoke(lease).await?;
            }
            _ => {
                let deleted = client.delete(self.key(app, id), None).await?.deleted();
                if deleted == 0 {
                    return Ok(false);
                }
            }
        }
        self.remember(app, id, None);
        Ok(true)
    }

    fn remember(&self, app: &str, id: &str, lease: Option<i64>) {
        let mut leases = msa_core::sync::lock(&self.inner.leases);
        let key = (app.to_ascii_uppercase(), id.to_owned());
        match lease {
            Some(lease) => leases.insert(key, lease),
            None => leases.remove(&key),
        };
    }

    /// The application and id of a key under the prefix.
    fn parse_key(&self, key: &[u8]) -> Option<(String, String)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.inner.prefix)?;
        let (app, id) = rest.split_once('/')?;
        Some((app.to_owned(), id.to_owned()))
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Option<InstanceInfo> {
        let (app, id) = self.parse_key(key)?;
        if value.len() > MAX_VALUE {
            tracing::warn!(%app, %id, bytes = value.len(), "record skipped: too large");
            return None;
        }
        match serde_json::from_slice::<InstanceInfo>(value) {
            Ok(info) if info.app == app && info.instance_id == id => Some(info),
            Ok(_) => {
                tracing::warn!(%app, %id, "record skipped: its key and contents disagree");
                None
            }
            Err(error) => {
                tracing::warn!(%app, %id, %error, "record skipped: not an instance");
                None
            }
        }
    }

    /// Keeps `store` a copy of etcd's records, from a task ([`msa_core::etcd::follow`]).
    /// The task ends when the store's last clone is gone.
    pub(crate) fn follow(&self, store: &Store) {
        let this = self.clone();
        let store = store.downgrade();
        let client = self.inner.client.clone();
        let prefix = self.inner.prefix.clone();
        tokio::spawn(msa_core::etcd::follow(client, prefix, move |update| {
            let Some(live) = store.upgrade() else {
                return false;
            };
            match update {
                Update::All(kvs) => {
                    let mut present = BTreeSet::new();
                    for kv in kvs {
                        if let Some(info) = this.decode(kv.key(), kv.value()) {
                            present.insert((info.app.clone(), info.instance_id.clone()));
                            this.remember(&info.app, &info.instance_id, Some(kv.lease()));
                            live.mirror(info);
                        }
                    }
                    for (app, id) in live.keys() {
                        if !present.contains(&(app.clone(), id.clone())) {
                            let _ = live.cancel(&app, &id);
                            this.remember(&app, &id, None);
                        }
                    }
                    tracing::info!(records = present.len(), "registry read from etcd");
                }
                Update::Events(events) => {
                    for event in events {
                        let Some(kv) = event.kv() else { continue };
                        let Some((app, id)) = this.parse_key(kv.key()) else {
                            continue;
                        };
                        match event.event_type() {
                            EventType::Put => {
                                if let Some(info) = this.decode(kv.key(), kv.value()) {
                                    this.remember(&app, &id, Some(kv.lease()));
                                    live.mirror(info);
                                }
                            }
                            EventType::Delete => {
                                this.remember(&app, &id, None);
                                let _ = live.cancel(&app, &id);
                            }
                        }
                    }
                }
                // The last known registry is served meanwhile.
                Update::Broken(_) => {}
            }
            true
        }));
    }
}

/// The leader's view while it decides on self-preservation.
#[derive(Default)]
struct Preserver {
    /// Whether it preserves now.
    engaged: bool,
    /// What it last shared (`None` before its first decision).
    shared: Option<bool>,
    /// When it last kept each lease alive itself.
    kept: HashMap<i64, tokio::time::Instant>,
}

impl EtcdStore {
    /// Starts self-preservation for `store` (see [`EtcdStore`]): sharing this replica's
    /// renewals and following the shared decision, and campaigning to decide it. The
    /// tasks end when the store's last clone is gone.
    pub(crate) fn preserve(&self, store: &Store) {
        let (this, weak) = (self.clone(), store.downgrade());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRESERVATION_EVERY);
            // The lease the count is kept under, renewed at each share.
            let mut lease = None;
            loop {
                every.tick().await;
                let Some(live) = weak.upgrade() else { return };
                match this.share(&mut lease, live.renewals_last_minute()).await {
                    Ok(decided) => live.set_preserving(decided),
                    Err(error) => tracing::debug!(%error, "cannot share renewals in etcd"),
                }
            }
        });
        let (this, weak) = (self.clone(), store.downgrade());
        tokio::spawn(async move {
            // Ends when the store is gone: the work returns, and the leader resigns.
            let (_running, stop) = tokio::sync::watch::channel(false);
            let client = match this.inner.client.get().await {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, "cannot reach etcd; not deciding self-preservation");
                    return;
                }
            };
            let name = format!(
                "msa-registry{}",
                this.inner.prefix.trim_end_matches("/registry/")
            );
            msa_core::etcd::Election::new(client, name, this.inner.replica.clone())
                .ttl(Duration::from_secs(5))
                .lead(|halt| this.clone().decide(weak.clone(), halt), stop)
                .await;
        });
    }

    /// Shares this replica's renewals under `lease` (kept alive, or granted when there is
    /// none or it lapsed); whether the estate preserves, as decided.
    async fn share(&self, lease: &mut Option<i64>, renewals: u64) -> Result<bool, EtcdError> {
        let key = format!("{}renewals/{}", self.inner.meta, self.inner.replica);
        let flag = format!("{}preserving", self.inner.meta);
        let held = *lease;
        let (kept, decided) = self
            .inner
            .client
            .retrying(|mut client| {
                let (key, flag) = (key.clone(), flag.clone());
                async move {
                    let alive = match held {
                        Some(id) => {
                            let (mut keeper, mut answers) = client.lease_keep_alive(id).await?;
                            keeper.keep_alive().await?;
                            let renewed = answers.message().await?;
                            renewed.is_some_and(|answer| answer.ttl() > 0).then_some(id)
                        }
                        None => None,
                    };
                    let id = match alive {
                        Some(id) => id,
                        None => client.lease_grant(COUNT_TTL, None).await?.id(),
                    };
                    let options = PutOptions::new().with_lease(id);
                    client.put(key, renewals.to_string(), Some(options)).await?;
                    let decided = client.get(flag, None).await?;
                    let decided = decided
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.value() == b"true");
                    Ok((id, decided))
                }
            })
            .await?;
        *lease = Some(kept);
        Ok(decided)
    }

    /// The elected replica's work: every second, decides on self-preservation from every
    /// replica's renewals, shares the decision, and while preserving keeps the leases
    /// alive. Returns when `halt` turns true or the store is gone.
    async fn decide(
        self,
        store: super::store::WeakStore,
        mut halt: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut preserver = Preserver::default();
        let mut every = tokio::time::interval(PRESERVATION_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = halt.wait_for(|halt| *halt) => return,
            }
            let Some(live) = store.upgrade() else { return };
            if let Err(error) = self.decide_once(&live, &mut preserver).await {
                tracing::warn!(%error, "cannot decide self-preservation in etcd");
            }
        }
    }

    async fn decide_once(&self, store: &Store, preserver: &mut Preserver) -> Result<(), EtcdError> {
        let config = store.config();
        let expected = store.expected_renewals_now();
        let counts = format!("{}renewals/", self.inner.meta);
        let answer = self
            .inner
            .client
            .retrying(|mut client| {
                let counts = counts.clone();
                async move {
                    Ok(client
                        .get(counts, Some(GetOptions::new().with_prefix()))
                        .await?)
                }
            })
            .await?;
        let renewals: u64 = answer
            .kvs()
            .iter()
            .filter_map(|kv| std::str::from_utf8(kv.value()).ok()?.parse::<u64>().ok())
            .fold(0, u64::saturating_add);
        let threshold = (expected * config.renewal_percent_threshold).floor();
        let below = config.self_preservation && expected > 0.0 && (renewals as f64) < threshold;
        preserver.engaged = match (preserver.engaged, below) {
            (_, false) => false,
            (true, true) => true,
            // Engages only when leases are lapsing too: renewals may just be on their way.
            (false, true) => self.lapsing(&store.lease_timings()).await > 1,
        };
        if preserver.shared != Some(preserver.engaged) {
            match preserver.engaged {
                true => tracing::warn!(
                    renewals,
                    expected = expected as u64,
                    "self-preservation engaged: the estate's renewals fell below {:.0}% of those expected; leases are kept alive",
                    config.renewal_percent_threshold * 100.0
                ),
                false if preserver.shared.is_some() => {
                    tracing::info!(renewals, "self-preservation released");
                }
                false => {}
            }
            let flag = format!("{}preserving", self.inner.meta);
            let value = preserver.engaged.to_string();
            self.inner
                .client
                .retrying(|mut client| {
                    let (flag, value) = (flag.clone(), value.clone());
                    async move { Ok(client.put(flag, value, None).await.map(drop)?) }
                })
                .await?;
            preserver.shared = Some(preserver.engaged);
            store.set_preserving(preserver.engaged);
        }
        if !preserver.engaged {
            preserver.kept.clear();
            return Ok(());
        }
        // Keep every lease alive, each a third of its duration after the last time.
        let now = tokio::time::Instant::now();
        let mut client = self.inner.client.get().await?;
        for ((app, id), duration, _) in store.lease_timings() {
            let Some(lease) = self.lease_of(&app, &id) else {
                continue;
            };
            if preserver
                .kept
                .get(&lease)
                .is_some_and(|kept| now.duration_since(*kept) < duration / 3)
            {
                continue;
            }
            let kept = msa_core::etcd::bounded(async {
                let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            if kept.is_ok() {
                preserver.kept.insert(lease, now);
            }
        }
        Ok(())
    }

    /// How many leases have gone two renewal intervals without a renewal, as etcd's time
    /// to live shows them (counting stops at two).
    async fn lapsing(&self, timings: &[((String, String), Duration, Duration)]) -> usize {
        let Ok(mut client) = self.inner.client.get().await else {
            return 0;
        };
        let mut lapsing = 0;
        for ((app, id), _, interval) in timings {
            let Some(lease) = self.lease_of(app, id) else {
                continue;
            };
            let Ok(answer) = msa_core::etcd::bounded(client.lease_time_to_live(lease, None)).await
            else {
                continue;
            };
            let silent = answer.granted_ttl().saturating_sub(answer.ttl().max(0));
            if u64::try_from(silent).unwrap_or(0) >= 2 * interval.as_secs().max(1) {
                lapsing += 1;
                if lapsing > 1 {
                    break;
                }
            }
        }
        lapsing
    }
}
