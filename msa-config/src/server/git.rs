//! The git backend: labels are branches, tags or commits; files are read from the commit,
//! cached by commit, and refreshed when the repository's refs move, never per request.
//!
//! A remote is fetched into a mirror by a thread of its own, through its own handle on the
//! mirror, so readers never wait for the network: while a fetch runs (or hangs), requests
//! are served from what the mirror has. A fetch that takes longer than the timeout is
//! given up on and reported by the health endpoint; the next starts when it has ended.

use msa_core::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use msa_core::secrets::mask_url;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::LabelError;
use super::format::{self, EXTENSIONS};
use super::repository::Snapshot;

/// How often a local repository's refs are checked.
pub const LOCAL_REFRESH: Duration = Duration::from_millis(500);
/// How often a remote repository is fetched, by default.
pub const REMOTE_REFRESH: Duration = Duration::from_secs(5);
/// How long a fetch may take, by default (Spring's `spring.cloud.config.server.git.timeout`).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Commits kept parsed: at most this many distinct commits are held in memory, whatever
/// labels clients ask for.
pub const CACHED_COMMITS: usize = 32;
/// The longest label looked up.
const MAX_LABEL: usize = 255;

/// How a [`GitRepository`] is read and refreshed.
#[derive(Clone, Debug)]
pub struct GitOptions {
    /// The label served when a request names none (else `main`, then `master`, then HEAD).
    pub default_label: Option<String>,
    /// How often a remote is fetched ([`REMOTE_REFRESH`] by default; a local repository's
    /// refs are checked every [`LOCAL_REFRESH`]).
    pub refresh: Duration,
    /// How long one fetch may take ([`FETCH_TIMEOUT`] by default).
    pub timeout: Duration,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            default_label: None,
            refresh: REMOTE_REFRESH,
            timeout: FETCH_TIMEOUT,
        }
    }
}

/// A git repository served by label.
#[derive(Clone, Debug)]
pub struct GitRepository {
    inner: Arc<Inner>,
}

struct Inner {
    /// The readers' handle.
    repo: Mutex<Repository>,
    location: String,
    default_label: Option<String>,
    /// A remote's mirror, which only the fetching thread writes.
    mirror: Option<PathBuf>,
    cache: Mutex<HashMap<Oid, Arc<Snapshot>>>,
    changes: watch::Sender<u64>,
    /// Why the last refresh failed, if it did.
    failing: Mutex<Option<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepository")
            .field("location", &self.location)
            .field("default_label", &self.default_label)
            .finish_non_exhaustive()
    }
}

fn git_error(e: git2::Error) -> LabelError {
    LabelError::Repository(e.message().to_owned())
}

/// Where a remote repository's mirror is kept.
fn mirror_dir(url: &str) -> PathBuf {
    let hash = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    std::env::temp_dir().join("msa-config-server").join(hash)
}

/// Every ref and where it points: what moves when someone pushes.
fn refs(repo: &Repository) -> Result<BTreeMap<String, Oid>, git2::Error> {
    let mut out = BTreeMap::new();
    for reference in repo.references()? {
        let reference = reference?;
        if let (Some(name), Some(target)) = (
            reference.name(),
            reference.resolve().ok().and_then(|r| r.target()),
        ) {
            out.insert(name.to_owned(), target);
        }
    }
    Ok(out)
}

impl GitRepository {
    /// Opens `spec`: a local repository (bare or not) is read in place; a URL is cloned
    /// once as a bare mirror and fetched every few seconds. Watches for changes from a
    /// background task (call inside a tokio runtime).
    pub fn open(spec: &str, default_label: Option<String>) -> Result<Self, LabelError> {
        GitRepository::open_with(
            spec,
            GitOptions {
                default_label,
                ..GitOptions::default()
            },
        )
    }

    /// As [`open`](Self::open), with `options`. The first fetch of a remote must end within
    /// the timeout, or opening fails.
    pub fn open_with(spec: &str, options: GitOptions) -> Result<Self, LabelError> {
        let local = Path::new(spec);
        let (repo, mirror) = if local.exists() {
            (Repository::open(local).map_err(git_error)?, None)
        } else {
            let dir = mirror_dir(spec);
            if Repository::open_bare(&dir).is_err() {
                std::fs::create_dir_all(&dir).map_err(|e| LabelError::Repository(e.to_string()))?;
                let repo = Repository::init_bare(&dir).map_err(git_error)?;
                repo.remote_with_fetch("origin", spec, "+refs/*:refs/*")
                    .map_err(git_error)?;
            }
            let fetched = fetch_within(&dir, options.timeout);
            match fetched.recv_timeout(options.timeout + Duration::from_secs(1)) {
                Ok(result) => result?,
                Err(_) => {
                    return Err(LabelError::Repository(format!(
                        "fetching {} did not finish in {:?}",
                        mask_url(spec),
                        options.timeout
                    )));
                }
            }
            (Repository::open_bare(&dir).map_err(git_error)?, Some(dir))
        };
        let last = refs(&repo).map_err(git_error)?;
        let inner = Arc::new(Inner {
            repo: Mutex::new(repo),
            // Names property sources and shows in health: never with a password in it.
            location: mask_url(spec.trim_end_matches('/')),
            default_label: options.default_label.clone(),
            mirror,
            cache: Mutex::default(),
            changes: watch::Sender::new(0),
            failing: Mutex::default(),
        });
        tokio::spawn(follow(Arc::downgrade(&inner), last, options));
        Ok(GitRepository { inner })
    }

    /// Where a remote's mirror is kept (`None` for a local repository, read in place).
    pub fn mirror(&self) -> Option<&Path> {
        self.inner.mirror.as_deref()
    }

    /// Why the last refresh (fetch or ref check) failed, while it is failing.
    pub fn failing(&self) -> Option<String> {
        lock(&self.inner.failing).clone()
    }

    /// The commit `label` names (the default label when `None`): a branch, a tag, or a
    /// commit id (at least 4 hex digits). Revision expressions (`HEAD~1`, `main^`,
    /// `:/text`, `@{1}`) are not labels.
    fn resolve(&self, repo: &Repository, label: Option<&str>) -> Result<Oid, LabelError> {
        match label.or(self.inner.default_label.as_deref()) {
            Some(label) => {
                commit_of(repo, label).ok_or_else(|| LabelError::Unknown(label.to_owned()))
            }
            None => ["main", "master"]
                .into_iter()
                .find_map(|branch| commit_of(repo, branch))
                .or_else(|| Some(repo.head().ok()?.peel_to_commit().ok()?.id()))
                .ok_or_else(|| LabelError::Unknown("main".to_owned())),
        }
    }

    /// The files at `label`. Reads the repository on this thread: from async code, call
    /// it through `spawn_blocking`.
    pub fn snapshot(&self, label: Option<&str>) -> Result<Arc<Snapshot>, LabelError> {
        let repo = lock(&self.inner.repo);
        let oid = self.resolve(&repo, label)?;
        if let Some(hit) = lock(&self.inner.cache).get(&oid) {
            return Ok(Arc::clone(hit));
        }
        let snapshot = Arc::new(read_commit(&repo, oid, &self.inner.location).map_err(git_error)?);
        drop(repo);
        let mut cache = lock(&self.inner.cache);
        if cache.len() >= CACHED_COMMITS {
            cache.clear();
        }
        cache.insert(oid, Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// A receiver notified whenever the repository's refs move.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Where the repository is.
    pub fn location(&self) -> &str {
        &self.inner.location
    }
}

/// The commit a branch, tag or commit id names.
fn commit_of(repo: &Repository, label: &str) -> Option<Oid> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return None;
    }
    if git2::Reference::is_valid_name(&format!("refs/heads/{label}")) {
        for namespace in ["refs/heads/", "refs/tags/", "refs/remotes/origin/"] {
            if let Ok(reference) = repo.find_reference(&format!("{namespace}{label}")) {
                return reference.peel_to_commit().ok().map(|c| c.id());
            }
        }
    }
    if (4..=40).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Hex digits only: a commit id or an unambiguous prefix of one, nothing else.
        let object = repo.revparse_single(label).ok()?;
        return object.peel(ObjectType::Commit).ok().map(|c| c.id());
    }
    None
}

/// Fetches the mirror at `dir` on a thread of its own, through its own handle, giving up
/// once `timeout` has passed (checked as data arrives); the result arrives on the channel.
fn fetch_within(
    dir: &Path,
    timeout: Duration,
) -> std::sync::mpsc::Receiver<Result<(), LabelError>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let dir = dir.to_owned();
    let spawned = std::thread::Builder::new()
        .name("msa-config-fetch".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + timeout;
            let fetched = (|| {
                let repo = Repository::open_bare(&dir).map_err(git_error)?;
                let mut remote = repo.find_remote("origin").map_err(git_error)?;
                let mut callbacks = git2::RemoteCallbacks::new();
                callbacks.transfer_progress(move |_| std::time::Instant::now() < deadline);
                callbacks.sideband_progress(move |_| std::time::Instant::now() < deadline);
                let mut options = git2::FetchOptions::new();
                options.remote_callbacks(callbacks);
                remote
                    .fetch(&["+refs/*:refs/*"], Some(&mut options), None)
                    .map_err(git_error)
            })();
            let _ = sender.send(fetched);
        });
    if let Err(error) = spawned {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let _ = sender.send(Err(LabelError::Repository(error.to_string())));
        return receiver;
    }
    receiver
}

/// Refreshes until the repository is dropped: fetches a remote every `options.refresh`
/// (one fetch at a time, each given up on after `options.timeout`) and announces moved
/// refs.
async fn follow(inner: Weak<Inner>, mut last: BTreeMap<String, Oid>, options: GitOptions) {
    let Some(first) = inner.upgrade() else { return };
    let (every, mirror) = match &first.mirror {
        Some(mirror) => (options.refresh, Some(mirror.clone())),
        None => (LOCAL_REFRESH, None),
    };
    drop(first);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A fetch given up on still runs; the next waits for it to end.
    let mut running: Option<tokio::sync::oneshot::Receiver<()>> = None;
    loop {
        ticker.tick().await;
        if inner.strong_count() == 0 {
            return;
        }
        if let Some(mirror) = &mirror {
            if let Some(previous) = &mut running
                && matches!(
                    previous.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                )
            {
                continue;
            }
            let fetched = fetch_within(mirror, options.timeout);
            let (done, ended) = tokio::sync::oneshot::channel();
            let waited = tokio::task::spawn_blocking(move || {
                let result = fetched.recv();
                let _ = done.send(());
                result
            });
            running = Some(ended);
            let outcome = match tokio::time::timeout(options.timeout, waited).await {
                Ok(Ok(Ok(result))) => result,
                Ok(_) => Err(LabelError::Repository("the fetch thread ended".into())),
                Err(_) => Err(LabelError::Repository(format!(
                    "fetching did not finish in {:?}",
                    options.timeout
                ))),
            };
            if let Err(error) = outcome {
                let Some(inner) = inner.upgrade() else { return };
                let mut failing = lock(&inner.failing);
                if failing.is_none() {
                    tracing::warn!(%error, "cannot refresh the config repository; serving what it had");
                }
                *failing = Some(error.to_string());
                continue;
            }
        }
        let Some(live) = inner.upgrade() else { return };
        let checked = tokio::task::spawn_blocking(move || {
            let now = refs(&lock(&live.repo)).map_err(git_error);
            (live, now)
        })
        .await;
        let Ok((live, now)) = checked else { continue };
        match now {
            Ok(now) => {
                if lock(&live.failing).take().is_some() {
                    tracing::info!(location = %live.location, "config repository reachable again");
                }
                if now != last {
                    tracing::info!(location = %live.location, "config repository changed");
                    last = now;
                    live.changes.send_modify(|generation| *generation += 1);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the config repository's refs");
                *lock(&live.failing) = Some(error.to_string());
            }
        }
    }
}

/// Reads and parses the config files of commit `oid`.
fn read_commit(repo: &Repository, oid: Oid, location: &str) -> Result<Snapshot, git2::Error> {
    let tree = repo.find_commit(oid)?.tree()?;
    let mut files = BTreeMap::new();
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Some(name) = entry.name() else {
            return TreeWalkResult::Ok;
        };
        let Some(format) = name
            .rsplit_once('.')
            .and_then(|(_, ext)| EXTENSIONS.iter().find(|(e, _)| *e == ext))
            .map(|(_, f)| *f)
        else {
            return TreeWalkResult::Ok;
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let path = format!("{dir}{name}");
        match repo.find_blob(entry.id()) {
            Ok(blob) => {
                let parsed = format::parse_bytes(&path, format, blob.content());
                files.insert(path, parsed);
                TreeWalkResult::Ok
            }
            Err(error) => {
                failure = Some(error);
                TreeWalkResult::Abort
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Snapshot {
        location: location.to_owned(),
        version: oid.to_string(),
        files,
    })
}
