//! The directory backend: a snapshot of every config file, read again when files change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::format::{self, EXTENSIONS, Flat, Format, ParseError};

#[cfg(target_os = "linux")]
mod events;

/// How often the directory is scanned for changes where no notifications are to be had.
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
///
/// Changes are read as soon as they are written: the file system's notifications (through
/// `notify`) wake the repository, which reads the directory again and tells its watchers.
/// On Linux, every request also first reads the kernel's queue of changes to the directory
/// (inotify), so a file written and closed before a request is served by it, as Spring's
/// native backend reads per request. A scan of the files' sizes and times backs both up
/// (every second; every [`SCAN_INTERVAL`] when no notifications are to be had), for changes
/// no notification reports, such as those on some network file systems.
#[derive(Clone, Debug)]
pub struct DirRepository {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// The kernel's queue, read on each request.
    #[cfg(target_os = "linux")]
    events: Option<Arc<events::Events>>,
    /// Changes reported so far (by `notify` or the kernel's queue).
    reported: Arc<AtomicU64>,
    /// Of those, how many the current snapshot has dealt with.
    covered: AtomicU64,
    /// Held while the directory is read, so one read serves everyone waiting for it.
    scan: tokio::sync::Mutex<Scan>,
}

/// What the last read of the directory found.
#[derive(Debug)]
struct Scan {
    print: Fingerprint,
    /// The last read failed (logged once until one succeeds).
    failing: bool,
}

/// How often the directory is scanned when notifications are watched too.
const SCAN_INTERVAL_NOTIFIED: Duration = Duration::from_secs(1);

impl DirRepository {
    /// Reads `dir` now and keeps following it from a background task (call inside a tokio
    /// runtime). A directory that cannot be read at start is an error; one that fails later
    /// keeps the last good snapshot and logs why.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        let first = Snapshot::read_dir(&dir)?;
        let print = fingerprint(&dir)?;
        let reported = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let watcher = notifications(&dir, reported.clone(), wake.clone());
        #[cfg(target_os = "linux")]
        let events = events::Events::watch(&dir)
            .map(Arc::new)
            .inspect_err(|error| tracing::warn!(%error, dir = %dir.display(), "cannot watch the config repository's changes; a request may be answered from a file up to a second old"))
            .ok();
        let inner = Arc::new(Inner {
            dir,
            snapshots: watch::channel(Arc::new(first)).0,
            #[cfg(target_os = "linux")]
            events,
            reported,
            covered: AtomicU64::new(0),
            scan: tokio::sync::Mutex::new(Scan {
                print,
                failing: false,
            }),
        });
        tokio::spawn(follow(Arc::downgrade(&inner), watcher, wake));
        Ok(DirRepository { inner })
    }

    /// The snapshot last read, without looking for changes since.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshots.borrow().clone()
    }

    /// The snapshot with every change reported so far read; on Linux, a file written and
    /// closed before this call is in it.
    pub async fn current(&self) -> Arc<Snapshot> {
        self.inner.catch_up().await;
        self.snapshot()
    }

    /// A receiver that is notified of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.snapshots.subscribe()
    }
}

/// Watches `dir` through `notify`: a change to a config file or to the tree is counted in
/// `reported` and wakes the follower. `None` (and a warning) where the platform gives no
/// notifications; the scan then runs every [`SCAN_INTERVAL`].
fn notifications(
    dir: &Path,
    reported: Arc<AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| relevant(&event)) {
            reported.fetch_add(1, Ordering::AcqRel);
            wake.notify_one();
        }
    };
    let watched = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    watched
        .inspect_err(|error| tracing::warn!(%error, dir = %dir.display(), "no change notifications for the config repository; scanning it every {SCAN_INTERVAL:?}"))
        .ok()
}

/// Whether a notification may change what is served: a config file or a directory (not a
/// hidden one) created, written, moved or removed, or a hint to look at everything again.
/// A file still open for writing is read once it is closed, where the platform reports
/// closes (Linux).
fn relevant(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
    if event.need_rescan() {
        return true;
    }
    let folder = matches!(event.kind, EventKind::Create(CreateKind::Folder));
    let kind = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(CreateKind::Folder)
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(_)) => true,
        EventKind::Create(_) | EventKind::Modify(_) => !cfg!(target_os = "linux"),
        EventKind::Any | EventKind::Other => true,
    };
    kind && event.paths.iter().any(|path| {
        let name = path.file_name().map(|n| n.to_string_lossy());
        let name = name.as_deref().unwrap_or_default();
        !name.starts_with('.') && (folder || format_of(name).is_some() || path.is_dir())
    })
}

impl Inner {
    /// Reads the directory again if a change was reported since the snapshot was read, or
    /// waits for the read under way that covers it.
    async fn catch_up(&self) {
        #[cfg(target_os = "linux")]
        self.read_kernel_queue();
        if self.covered.load(Ordering::Acquire) < self.reported.load(Ordering::Acquire) {
            self.read(false).await;
        }
    }

    /// Counts a change if the kernel's queue holds one (reading it to the end).
    #[cfg(target_os = "linux")]
    fn read_kernel_queue(&self) {
        let Some(events) = &self.events else { return };
        match events.drain(|name| format_of(name).is_some()) {
            Ok(true) => {
                self.reported.fetch_add(1, Ordering::AcqRel);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the config repository's change queue")
            }
        }
    }

    /// Reads the directory if a change is reported that the snapshot has not dealt with
    /// (or, with `scan`, if the files' fingerprint changed), and publishes what changed.
    async fn read(&self, scan: bool) {
        let mut last = self.scan.lock().await;
        // What is queued until now is covered by this read.
        #[cfg(target_os = "linux")]
        self.read_kernel_queue();
        let reported = self.reported.load(Ordering::Acquire);
        // A read done while this one waited may have dealt with it already.
        let dirty = self.covered.load(Ordering::Acquire) < reported;
        if !dirty && !scan {
            return;
        }
        let dir = self.dir.clone();
        let previous = last.print.clone();
        #[cfg(target_os = "linux")]
        let events = self.events.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<_>> {
            let print = fingerprint(&dir)?;
            if !dirty {
                // A scan: read only what changed, once it holds still.
                if print == previous {
                    return Ok(None);
                }
                std::thread::sleep(SETTLE);
                if fingerprint(&dir)? != print {
                    return Ok(None); // still being written: look again next time
                }
            }
            // Directories created since are watched before they are read.
            #[cfg(target_os = "linux")]
            if let Some(events) = &events {
                events.watch_tree(&dir)?;
            }
            Ok(Some((print, Snapshot::read_dir(&dir)?)))
        })
        .await;
        // Read or failed, the reported changes are dealt with: a failure is logged and
        // the scan tries again, rather than every request.
        self.covered.fetch_max(reported, Ordering::AcqRel);
        match read {
            Ok(Ok(Some((print, snapshot)))) => {
                last.print = print;
                last.failing = false;
                if snapshot.version != self.snapshots.borrow().version {
                    tracing::info!(version = %snapshot.version, "config repository changed");
                    self.snapshots.send_replace(Arc::new(snapshot));
                }
            }
            Ok(Ok(None)) => last.failing = false,
            Ok(Err(error)) if !last.failing => {
                last.failing = true;
                tracing::warn!(%error, dir = %self.dir.display(), "cannot read the config repository; serving the last good snapshot");
            }
            _ => {}
        }
    }
}

/// Follows the directory until every handle on the repository is gone: reads it as soon
/// as a notification reports a change, and scans it on an interval. `watcher` lives as
/// long as this task: dropping it stops notify's thread.
async fn follow(
    inner: Weak<Inner>,
    watcher: Option<notify::RecommendedWatcher>,
    wake: Arc<tokio::sync::Notify>,
) {
    let every = match watcher {
        Some(_) => SCAN_INTERVAL_NOTIFIED,
        None => SCAN_INTERVAL,
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is now: the directory was just read
    loop {
        let scan = tokio::select! {
            () = wake.notified() => false,
            _ = ticker.tick() => true,
        };
        let Some(inner) = inner.upgrade() else { return };
        match scan {
            true => inner.read(true).await,
            false => inner.catch_up().await,
        }
    }
}
