//! The git backend: labels are branches, tags or commits; files are read from the commit,
//! cached by commit, and refreshed when the repository's refs move, never per request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::format::{self, EXTENSIONS};
use super::repository::Snapshot;

/// How often a local repository's refs are checked.
pub const LOCAL_REFRESH: Duration = Duration::from_millis(500);
/// How often a remote repository is fetched.
pub const REMOTE_REFRESH: Duration = Duration::from_secs(5);
/// Commits kept parsed.
const CACHED_COMMITS: usize = 32;

/// Why a label cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No branch, tag or commit has this name.
    #[error("no label {0:?}: not a branch, tag or commit of the repository")]
    Unknown(String),
    /// The repository could not be read.
    #[error("cannot read the repository: {0}")]
    Repository(String),
}

/// A git repository served by label.
#[derive(Clone, Debug)]
pub struct GitRepository {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Mutex<Repository>,
    location: String,
    default_label: Option<String>,
    remote: bool,
    cache: Mutex<HashMap<Oid, Arc<Snapshot>>>,
    changes: watch::Sender<u64>,
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
        let local = Path::new(spec);
        let (repo, remote) = if local.exists() {
            (Repository::open(local).map_err(git_error)?, false)
        } else {
            let dir = mirror_dir(spec);
            let repo = match Repository::open_bare(&dir) {
                Ok(repo) => repo,
                Err(_) => {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| LabelError::Repository(e.to_string()))?;
                    let repo = Repository::init_bare(&dir).map_err(git_error)?;
                    repo.remote_with_fetch("origin", spec, "+refs/*:refs/*")
                        .map_err(git_error)?;
                    repo
                }
            };
            fetch(&repo)?;
            (repo, true)
        };
        let mut last = refs(&repo).map_err(git_error)?;
        let inner = Arc::new(Inner {
            repo: Mutex::new(repo),
            location: spec.trim_end_matches('/').to_owned(),
            default_label,
            remote,
            cache: Mutex::default(),
            changes: watch::Sender::new(0),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let every = if remote {
                REMOTE_REFRESH
            } else {
                LOCAL_REFRESH
            };
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let checked = tokio::task::spawn_blocking(move || {
                    let repo = inner.repo.lock().unwrap_or_else(PoisonError::into_inner);
                    if inner.remote {
                        fetch(&repo)?;
                    }
                    let now = refs(&repo).map_err(git_error)?;
                    drop(repo);
                    Ok::<_, LabelError>((inner, now))
                })
                .await;
                match checked {
                    Ok(Ok((inner, now))) if now != last => {
                        tracing::info!(location = %inner.location, "config repository changed");
                        last = now;
                        inner.changes.send_modify(|generation| *generation += 1);
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot refresh the config repository; serving what it had")
                    }
                    _ => {}
                }
            }
        });
        Ok(GitRepository { inner })
    }

    /// The commit `label` names (the default label when `None`).
    fn resolve(&self, repo: &Repository, label: Option<&str>) -> Result<Oid, LabelError> {
        let commit_of = |name: &str| -> Option<Oid> {
            let object = repo.revparse_single(name).ok()?;
            object.peel(ObjectType::Commit).ok().map(|c| c.id())
        };
        match label.or(self.inner.default_label.as_deref()) {
            Some(label) => commit_of(label).ok_or_else(|| LabelError::Unknown(label.to_owned())),
            None => ["main", "master", "HEAD"]
                .into_iter()
                .find_map(commit_of)
                .ok_or_else(|| LabelError::Unknown("main".to_owned())),
        }
    }

    /// The files at `label`.
    pub fn snapshot(&self, label: Option<&str>) -> Result<Arc<Snapshot>, LabelError> {
        let repo = self
            .inner
            .repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let oid = self.resolve(&repo, label)?;
        if let Some(hit) = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&oid)
        {
            return Ok(Arc::clone(hit));
        }
        let snapshot = Arc::new(read_commit(&repo, oid, &self.inner.location).map_err(git_error)?);
        drop(repo);
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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

fn fetch(repo: &Repository) -> Result<(), LabelError> {
    let mut remote = repo.find_remote("origin").map_err(git_error)?;
    remote
        .fetch(&["+refs/*:refs/*"], None, None)
        .map_err(git_error)
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
