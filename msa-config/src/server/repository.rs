//! The directory backend: a snapshot of every config file, rescanned when files change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::format::{self, EXTENSIONS, Flat, Format, ParseError};

/// How often the directory is checked for changes.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a change must hold still before it is read: a file caught between an editor's
/// truncate and write is not served half-written.
pub const SETTLE: Duration = Duration::from_millis(20);

/// Every config file of a repository at one moment.
#[derive(Debug)]
pub struct Snapshot {
    /// Where the files come from, as property sources name it (`file:/etc/config`).
    pub location: String,
    /// A hash of every file's name and contents.
    pub version: String,
    /// Parsed files by path relative to the repository (`orders-dev.yml`).
    pub files: BTreeMap<String, Result<Flat, ParseError>>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn empty(location: String) -> Self {
        Snapshot {
            location,
            version: hex::encode(Sha256::digest(b"")),
            files: BTreeMap::new(),
        }
    }

    /// Reads and parses every config file under `dir` (hidden entries skipped).
    pub fn read_dir(dir: &Path) -> std::io::Result<Snapshot> {
        let mut paths = Vec::new();
        collect(dir, dir, &mut paths)?;
        paths.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hash = Sha256::new();
        let mut files = BTreeMap::new();
        for (relative, format) in paths {
            let bytes = std::fs::read(dir.join(&relative))?;
            hash.update(relative.as_bytes());
            hash.update([0]);
            hash.update(&bytes);
            hash.update([0]);
            let parsed = format::parse_bytes(&relative, format, &bytes);
            files.insert(relative, parsed);
        }
        Ok(Snapshot {
            location: format!("file:{}", dir.display()),
            version: hex::encode(&hash.finalize()[..20]),
            files,
        })
    }
}

fn format_of(name: &str) -> Option<Format> {
    let ext = name.rsplit_once('.')?.1;
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, f)| *f)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Format)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if let Some(format) = format_of(&name) {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let relative = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, format));
        }
    }
    Ok(())
}

/// What changes when a file is edited, cheaply: path, size, modification time, inode.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    fn walk(dir: &Path, out: &mut Fingerprint) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), out)?;
            } else {
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&meta);
                #[cfg(not(unix))]
                let inode = 0;
                out.push((entry.path(), meta.len(), meta.modified().ok(), inode));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// A directory repository: the latest snapshot, and a channel that announces new ones.
#[derive(Clone, Debug)]
pub struct DirRepository {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl DirRepository {
    /// Reads `dir` now and keeps watching it from a background task (call inside a tokio
    /// runtime). A directory that cannot be read at start is an error; one that fails later
    /// keeps the last good snapshot and logs why.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        let first = Snapshot::read_dir(&dir)?;
        let mut last_print = fingerprint(&dir)?;
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SCAN_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticker.tick().await;
                if tx.is_closed() {
                    return;
                }
                let scanned = {
                    let dir = dir.clone();
                    let last = last_print.clone();
                    tokio::task::spawn_blocking(move || -> std::io::Result<Option<_>> {
                        let print = fingerprint(&dir)?;
                        if print == last {
                            return Ok(None);
                        }
                        std::thread::sleep(SETTLE);
                        if fingerprint(&dir)? != print {
                            return Ok(None); // still being written: look again next tick
                        }
                        Ok(Some((print, Snapshot::read_dir(&dir)?)))
                    })
                    .await
                };
                match scanned {
                    Ok(Ok(Some((print, snapshot)))) => {
                        last_print = print;
                        failing = false;
                        if snapshot.version != tx.borrow().version {
                            tracing::info!(version = %snapshot.version, "config repository changed");
                            tx.send_replace(Arc::new(snapshot));
                        }
                    }
                    Ok(Ok(None)) => failing = false,
                    Ok(Err(error)) if !failing => {
                        failing = true;
                        tracing::warn!(%error, dir = %dir.display(), "cannot read the config repository; serving the last good snapshot");
                    }
                    _ => {}
                }
            }
        });
        Ok(DirRepository { snapshots: rx })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that is notified of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }
}
