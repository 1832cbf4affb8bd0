//! etcd, the distributed engine msa runs on past one machine (feature `etcd`): clients
//! from `etcd://host:port[,host:port…]` URLs ([`LazyClient`], with calls that move off a
//! member that hangs), the one follower of a key prefix that every copy of etcd's data in
//! msa is kept by ([`follow`]), and leader election for work only one replica should do
//! (an outbox relay, a saga resumer, a sweeper: [`Election`]).
//!
//! The client is [`etcd_client`] (etcd's gRPC API over tonic), re-exported here so every
//! msa crate uses one version.
//!
//! ```no_run
//! # async fn run() -> Result<(), msa_core::etcd::EtcdError> {
//! use msa_core::etcd::{self, Election};
//!
//! let client = etcd::connect("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379").await?;
//! let leadership = Election::new(client, "outbox-relay", "orders-7f3a").campaign().await?;
//! // Only this replica runs the relay until it resigns (drops `leadership`) or loses its
//! // lease (a partition), when `lost()` completes.
//! leadership.lost().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use etcd_client;
use etcd_client::{Client, ConnectOptions, Event, KeyValue, LeaderKey, ResignOptions};
use tokio::sync::watch;

use tonic::Code as tonic_code;

/// An etcd URL that cannot be used, or an etcd call that failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The URL is not `etcd://host:port[,host:port…]`.
    #[error("not an etcd URL (etcd://host:port[,host:port...]): {0}")]
    Url(String),
    /// etcd answered with an error, or could not be reached.
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// The endpoints of `url`: `etcd://h1:2379,h2:2379` (or `http://` URLs, or bare
/// `host:port`s), each as `http://host:port`.
///
/// ```
/// let endpoints = msa_core::etcd::endpoints("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap();
/// assert_eq!(endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// assert!(msa_core::etcd::endpoints("etcd://").is_err());
/// ```
pub fn endpoints(url: &str) -> Result<Vec<String>, EtcdError> {
    let list = url
        .strip_prefix("etcd://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let authority = e.strip_prefix("http://").unwrap_or(e);
            let valid = authority
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if valid && !authority.contains('/') {
                Ok(format!("http://{authority}"))
            } else {
                Err(EtcdError::Url(crate::secrets::mask_url(url)))
            }
        })
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err(EtcdError::Url(crate::secrets::mask_url(url)));
    }
    Ok(endpoints)
}

/// How long one call [`LazyClient::retrying`] makes may go unanswered before it is tried again (a
/// member that hangs, frozen or partitioned, costs a caller that much).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A client of the cluster at `url` (see [`endpoints`]): connects within 2 s and pings
/// every second, so a dead connection is noticed within two; a member cut off from the
/// cluster's leader refuses calls (and cancels watches) rather than answer from a stale
/// view. Calls have no deadline of their own (a campaign waits as long as another
/// leads): bound them with [`LazyClient::retrying`] or [`bounded`].
pub async fn connect(url: &str) -> Result<Client, EtcdError> {
    let endpoints = endpoints(url)?;
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    Ok(Client::connect(endpoints, Some(options)).await?)
}

/// A client connected on first use: for settings read where nothing can wait (building
/// an app), used by tasks that can. A failed connection is tried again at the next use.
/// Cheap to clone; clones share the connection.
///
/// A client made from a URL also keeps, on demand, one client per member
/// ([`pinned`](Self::pinned)): a follower ([`follow`]) reads and watches through one member
/// and moves to the next when that one hangs, which the shared client's balancing cannot
/// tell from a slow answer.
#[derive(Clone)]
pub struct LazyClient {
    url: Arc<str>,
    client: Arc<tokio::sync::OnceCell<Client>>,
    /// A client per endpoint of `url` (none for a client given [`ready`](Self::ready)).
    members: Arc<[tokio::sync::OnceCell<Client>]>,
    /// The member the next follower starts on (followers spread over the members).
    next_member: Arc<AtomicUsize>,
    /// The member [`retrying`](Self::retrying) calls go through.
    current: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("url", &crate::secrets::mask_url(&self.url))
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl LazyClient {
    /// A client of the cluster at `url`, not connected yet; the URL is checked now.
    pub fn new(url: &str) -> Result<LazyClient, EtcdError> {
        let members = endpoints(url)?.iter().map(|_| Default::default()).collect();
        Ok(LazyClient {
            url: url.into(),
            client: Arc::default(),
            members,
            next_member: Arc::default(),
            current: Arc::default(),
        })
    }

    /// A client that is connected already. Its followers read and watch through it
    /// rather than one member at a time (it has no URL to pin a member from).
    pub fn ready(client: Client) -> LazyClient {
        LazyClient {
            url: "".into(),
            client: Arc::new(tokio::sync::OnceCell::new_with(Some(client))),
            members: Arc::new([]),
            next_member: Arc::default(),
            current: Arc::default(),
        }
    }

    /// The client, connecting first if no use has yet.
    pub async fn get(&self) -> Result<Client, EtcdError> {
        self.client
            .get_or_try_init(|| connect(&self.url))
            .await
            .cloned()
    }

    /// A client of member `n` only (counted modulo the members, in the URL's order), so
    /// that a caller can leave a member that hangs for the next; the shared client
    /// ([`get`](Self::get)) when there is no URL.
    pub async fn pinned(&self, n: usize) -> Result<Client, EtcdError> {
        if self.members.is_empty() {
            return self.get().await;
        }
        let n = n % self.members.len();
        self.members[n]
            .get_or_try_init(|| async {
                let endpoint = endpoints(&self.url)?.swap_remove(n);
                connect(&endpoint).await
            })
            .await
            .cloned()
    }

    /// Runs `call` with a client, each attempt bounded by [`CALL_TIMEOUT`], again while it
    /// fails transiently (see [`transient`]) or times out, up to three times in all, 50 ms
    /// and then 200 ms apart.
    ///
    /// Calls go through one member (the client's current one; each in turn for a client
    /// without a URL, through its own balancing): an attempt that times out or finds its
    /// member unreachable moves this client and every clone to the next member, so a member
    /// that hangs — which still accepts connections, so balancing keeps choosing it —
    /// costs one attempt rather than one in three calls.
    pub async fn retrying<T, F>(&self, mut call: impl FnMut(Client) -> F) -> Result<T, EtcdError>
    where
        F: std::future::Future<Output = Result<T, EtcdError>>,
    {
        let mut pause = Duration::from_millis(50);
        for attempt in 0..3 {
            let member = self.current.load(Ordering::Relaxed);
            let outcome = match self.pinned(member).await {
                Ok(client) => tokio::time::timeout(CALL_TIMEOUT, call(client))
                    .await
                    .unwrap_or(Err(EtcdError::Timeout(CALL_TIMEOUT))),
                Err(error) => Err(error),
            };
            let failed = match &outcome {
                Err(EtcdError::Client(error)) => transient(error),
                Err(EtcdError::Timeout(_)) => true,
                _ => false,
            };
            if !failed {
                return outcome;
            }
            let _ = self.current.compare_exchange(
                member,
                member.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if attempt == 2 {
                return outcome;
            }
            tracing::debug!(error = ?outcome.err(), "etcd call failed; trying again");
            tokio::time::sleep(pause).await;
            pause *= 4;
        }
        unreachable!("the third attempt returns")
    }

    /// The member a new follower starts on: each in turn.
    fn first_member(&self) -> usize {
        self.next_member.fetch_add(1, Ordering::Relaxed)
    }
}

impl From<Client> for LazyClient {
    fn from(client: Client) -> Self {
        LazyClient::ready(client)
    }
}

/// Leader election on etcd's election API: of every replica campaigning for one name,
/// one leads at a time. Leadership is bound to a lease the leader keeps alive; a leader
/// that dies or is cut off loses it within the lease's time to live, and the next
/// campaigner leads.
#[derive(Clone)]
pub struct Election {
    client: Client,
    name: String,
    value: String,
    ttl: Duration,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("value", &self.value)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Election {
    /// A campaign for `name` (the election's key), announcing `value` (who leads: an
    /// instance id) while leading. Leadership lasts 10 s past the leader's last renewal
    /// unless [`ttl`](Self::ttl) says otherwise.
    pub fn new(client: Client, name: impl Into<String>, value: impl Into<String>) -> Self {
        Election {
            client,
            name: format!("/msa/elections/{}", name.into()),
            value: value.into(),
            ttl: Duration::from_secs(10),
        }
    }

    /// How long leadership outlives a leader that stopped renewing it (at least 2 s; etcd
    /// counts leases in whole seconds).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(2));
        self
    }

    /// Who leads now (their value), if anyone. Asked again (up to 20 times) while etcd is
    /// unreachable or electing a leader of its own.
    pub async fn leader(&self) -> Result<Option<String>, EtcdError> {
        let mut client = self.client.clone();
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut tries = 0;
        loop {
            tries += 1;
            match client.leader(self.name.as_str()).await {
                Ok(answer) => {
                    return Ok(answer
                        .kv()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()));
                }
                // No campaigner: the election service answers "election: no leader". (The
                // cluster's own "etcdserver: no leader", while it elects one, is not that:
                // asked again below.)
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.message().contains("election: no leader") =>
                {
                    return Ok(None);
                }
                Err(error) if tries < 20 && transient(&error) => backoff.wait().await,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Waits until this campaign leads, then returns its leadership. While etcd is
    /// unreachable, slow to answer or electing a leader of its own, the campaign is retried (with growing
    /// pauses, up to 5 s); other errors end it.
    pub async fn campaign(&self) -> Result<Leadership, EtcdError> {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.try_campaign().await {
                Ok(leadership) => return Ok(leadership),
                Err(EtcdError::Client(error)) if transient(&error) => {
                    tracing::warn!(election = %self.name, %error, "campaign interrupted; retrying");
                    backoff.wait().await;
                }
                Err(error @ EtcdError::Timeout(_)) => {
                    tracing::warn!(election = %self.name, %error, "campaign unanswered; retrying");
                    backoff.wait().await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_campaign(&self) -> Result<Leadership, EtcdError> {
        let mut client = self.client.clone();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = bounded(client.lease_grant(ttl, None)).await?.id();
        let (leading, lost) = watch::channel(true);
        let keeper = {
            let (client, ttl, name) = (client.clone(), self.ttl, self.name.clone());
            tokio::spawn(async move {
                let why = keep_alive(client, lease, ttl).await;
                tracing::warn!(election = %name, reason = %why, "leadership lost");
                let _ = leading.send(false);
            })
        };
        // Until it leads, a campaign given up (an error, or its caller gone) must not stay
        // queued in the election under a lease kept alive: the guard revokes it.
        let mut waiting = Campaigning {
            client: client.clone(),
            lease,
            keeper: Some(keeper),
        };
        let answer = client
            .campaign(self.name.as_str(), self.value.as_str(), lease)
            .await?;
        let key = answer.leader().cloned();
        tracing::info!(election = %self.name, value = %self.value, "leading");
        Ok(Leadership {
            client,
            key,
            lease,
            lost,
            keeper: waiting
                .keeper
                .take()
                .expect("the keeper is the guard's until now"),
        })
    }

    /// Runs `work` whenever this campaign leads, until `stop` turns true: campaigns; once
    /// leading, starts `work(halt)`; when leadership is lost, turns `halt` true, waits for
    /// `work` to return and campaigns again. At `stop`, halts the work and resigns, so
    /// another replica leads at once. Work that returns on its own ends it too.
    ///
    /// `work` must stop soon after `halt` turns true: until it does, another replica may
    /// already be leading.
    pub async fn lead<Fut>(
        &self,
        mut work: impl FnMut(watch::Receiver<bool>) -> Fut,
        mut stop: watch::Receiver<bool>,
    ) where
        Fut: std::future::Future<Output = ()>,
    {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let campaign = tokio::select! {
                campaign = self.campaign() => campaign,
                () = stopped(&mut stop) => return,
            };
            let leadership = match campaign {
                Ok(leadership) => leadership,
                Err(error) => {
                    tracing::warn!(election = %self.name, %error, "cannot campaign; trying again");
                    tokio::select! {
                        () = backoff.wait() => continue,
                        () = stopped(&mut stop) => return,
                    }
                }
            };
            backoff.reset();
            let (halt, halted) = watch::channel(false);
            let running = work(halted);
            tokio::pin!(running);
            tokio::select! {
                () = &mut running => {
                    let _ = leadership.resign().await;
                    return;
                }
                () = leadership.lost() => {
                    halt.send_replace(true);
                    running.await;
                }
                () = stopped(&mut stop) => {
                    halt.send_replace(true);
                    running.await;
                    if let Err(error) = leadership.resign().await {
                        tracing::warn!(election = %self.name, %error, "cannot resign; the lease will lapse");
                    }
                    return;
                }
            }
        }
    }
}

/// Completes when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A campaign not leading yet: dropped, it stops keeping its lease alive and revokes it.
struct Campaigning {
    client: Client,
    lease: i64,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Campaigning {
    fn drop(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        keeper.abort();
        let (mut client, lease) = (self.client.clone(), self.lease);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = bounded(client.lease_revoke(lease)).await;
            });
        }
    }
}

/// `call` within [`CALL_TIMEOUT`] (one attempt): for calls that cannot be repeated,
/// such as opening a watch.
pub async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(EtcdError::Timeout(CALL_TIMEOUT)),
    }
}

/// What a [`follow`]er is told.
#[derive(Debug)]
pub enum Update<'a> {
    /// Every key under the prefix, as one read found them: the first read, and each read
    /// after following broke. It replaces everything known before.
    All(&'a [KeyValue]),
    /// Changes after the last update, in etcd's order.
    Events(&'a [Event]),
    /// Following broke (etcd unreachable, a member that hangs, history compacted past the
    /// watch); what is known stays known, and the prefix is read again through the next
    /// member after a pause (100 ms, doubling up to 5 s while it keeps failing).
    Broken(&'a EtcdError),
}

/// How often a follower looks whether its watch still keeps up.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How long a look may go unanswered before it counts as the watch being behind.
const LOOK_TIMEOUT: Duration = Duration::from_secs(1);

/// Follows every key under `prefix`: reads them all ([`Update::All`]), then watches from
/// the revision after that read ([`Update::Events`]) — the one way msa keeps a copy of
/// part of etcd (the registry's instances, services, config files). Returns when `apply`
/// says `false` (nobody needs the copy any more).
///
/// Reads and the watch go through one member at a time (see [`LazyClient::pinned`]). A
/// watch cannot tell a member that hangs (frozen, partitioned) from a quiet prefix, so
/// every 2 s the follower asks the member for the prefix's newest revision: a watch that
/// has not caught up with it by the next look, or two looks in a row unanswered within
/// 1 s, break following, which moves to the next member. A copy is thus behind for at
/// most about 5 s while a member hangs.
pub async fn follow(
    client: LazyClient,
    prefix: impl Into<String>,
    mut apply: impl FnMut(Update<'_>) -> bool,
) {
    let prefix = prefix.into();
    let mut member = client.first_member();
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing = false;
    loop {
        let error = match follow_member(&client, member, &prefix, &mut apply, &mut || {
            if failing {
                tracing::info!(%prefix, "etcd followed again");
                failing = false;
            }
            backoff.reset();
        })
        .await
        {
            Ok(()) => return,
            Err(error) => error,
        };
        if !failing {
            tracing::warn!(%prefix, %error, "following etcd broke; keeping what is known");
            failing = true;
        }
        if !apply(Update::Broken(&error)) {
            return;
        }
        member = member.wrapping_add(1);
        backoff.wait().await;
    }
}

/// Reads and watches `prefix` through one member until that breaks (an error) or
/// `apply` says stop (`Ok`). `recovered` runs after a read got through.
async fn follow_member(
    client: &LazyClient,
    member: usize,
    prefix: &str,
    apply: &mut impl FnMut(Update<'_>) -> bool,
    recovered: &mut impl FnMut(),
) -> Result<(), EtcdError> {
    use etcd_client::{GetOptions, WatchOptions};
    let mut client = client.pinned(member).await?;
    let read = bounded(client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
    let revision = read.header().map_or(0, |h| h.revision());
    if !apply(Update::All(read.kvs())) {
        return Ok(());
    }
    recovered();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = bounded(client.watch(prefix, Some(options))).await?;
    let mut applied = revision;
    let mut behind = 0;
    let mut looks = tokio::time::interval(LOOK_EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    looks.tick().await;
    loop {
        let answer = tokio::select! {
            answer = stream.message() => answer?,
            _ = looks.tick() => {
                match newest_revision(&client, prefix).await {
                    Some(newest) if newest <= applied => behind = 0,
                    _ => behind += 1,
                }
                if behind >= 2 {
                    return Err(etcd_client::Error::WatchError("the watch fell behind".into()).into());
                }
                continue;
            }
        };
        let Some(answer) = answer else {
            return Err(etcd_client::Error::WatchError("the watch ended".into()).into());
        };
        if answer.canceled() || answer.compact_revision() > 0 {
            let reason = format!("the watch was canceled: {}", answer.cancel_reason());
            return Err(etcd_client::Error::WatchError(reason).into());
        }
        if let Some(header) = answer.header() {
            applied = applied.max(header.revision());
        }
        if !answer.events().is_empty() && !apply(Update::Events(answer.events())) {
            return Ok(());
        }
    }
}

/// The newest revision of a key under `prefix` (0 for none), or `None` when the member
/// does not answer within [`LOOK_TIMEOUT`].
async fn newest_revision(client: &Client, prefix: &str) -> Option<i64> {
    use etcd_client::{GetOptions, SortOrder, SortTarget};
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Mod, SortOrder::Descend)
        .with_limit(1)
        .with_keys_only();
    let mut client = client.clone();
    let answer = tokio::time::timeout(LOOK_TIMEOUT, client.get(prefix, Some(options)))
        .await
        .ok()?
        .ok()?;
    Some(answer.kvs().first().map_or(0, |kv| kv.mod_revision()))
}

/// Whether `error` is etcd being unreachable or between leaders: worth retrying.
pub fn transient(error: &etcd_client::Error) -> bool {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic_code::Unavailable | tonic_code::DeadlineExceeded | tonic_code::Unknown
        ),
        Error::TransportError(_) | Error::IoError(_) => true,
        _ => false,
    }
}

/// Keeps `lease` alive, renewing it every third of `ttl`, until it is lost: etcd says it
/// expired or was revoked, or no renewal got through for a whole `ttl`. Returns why.
pub async fn keep_alive(mut client: Client, lease: i64, ttl: Duration) -> String {
    let every = ttl / 3;
    let mut renewed = tokio::time::Instant::now();
    loop {
        let outcome = async {
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            loop {
                keeper.keep_alive().await?;
                match answers.message().await? {
                    Some(answer) if answer.ttl() > 0 => renewed = tokio::time::Instant::now(),
                    _ => return Ok::<(), etcd_client::Error>(()),
                }
                tokio::time::sleep(every).await;
            }
        }
        .await;
        match outcome {
            Ok(()) => return "etcd says the lease expired".into(),
            Err(error) if renewed.elapsed() >= ttl => {
                return format!("not renewed within its ttl: {error}");
            }
            Err(_) => tokio::time::sleep(every.min(Duration::from_millis(500))).await,
        }
    }
}

/// Leading an [`Election`]. Dropping it resigns (in the background); [`resign`](Self::resign)
/// waits for etcd to hear it.
pub struct Leadership {
    client: Client,
    key: Option<LeaderKey>,
    lease: i64,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.lease)
            .field("leading", &self.is_leading())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Whether this replica still leads.
    pub fn is_leading(&self) -> bool {
        *self.lost.borrow()
    }

    /// Completes when leadership is lost (the lease expired: this replica was cut off or
    /// too slow to renew it). Stop the leader's work then: another replica may lead.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|leading| !leading).await;
    }

    /// Gives up leadership now, so another campaigner leads at once.
    pub async fn resign(mut self) -> Result<(), EtcdError> {
        self.keeper.abort();
        resign(&mut self.client, self.key.take(), self.lease).await
    }
}

async fn resign(client: &mut Client, key: Option<LeaderKey>, lease: i64) -> Result<(), EtcdError> {
    if let Some(key) = key {
        client
            .resign(Some(ResignOptions::new().with_leader(key)))
            .await?;
    }
    client.lease_revoke(lease).await?;
    Ok(())
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
        if let Some(key) = self.key.take() {
            let mut client = self.client.clone();
            let lease = self.lease;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = resign(&mut client, Some(key), lease).await;
                });
            }
        }
    }
}
