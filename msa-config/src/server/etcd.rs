//! Config files kept in etcd (`msa-config-server --etcd etcd://...`, feature `etcd`): any
//! number of config servers serve the same files, and a change reaches them (and, through
//! their watch API, their clients) within milliseconds.
//!
//! Key layout (the prefix is `/msa` unless set otherwise): one key per file, its value the
//! file's text, its format by its suffix (`.yml`, `.yaml`, `.properties`, `.json`,
//! `.toml`), as Kratos reads config from etcd:
//!
//! ```text
//! /msa/config/<label>/<file>    e.g. /msa/config/main/orders-dev.yml
//! ```
//!
//! A label is the first segment (`main` by default: `--default-label`); a request for a
//! label with no file is answered 404, as for a branch git does not have.

use msa_core::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msa_core::etcd::etcd_client::EventType;
use msa_core::etcd::{EtcdError, LazyClient, Update};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::LabelError;
use super::format::{self, EXTENSIONS};
use super::repository::Snapshot;

/// The key prefix unless another is given (files are under `<prefix>/config/`).
pub const PREFIX: &str = "/msa";

/// The largest file read from etcd; larger ones are skipped, with a warning.
const MAX_FILE: usize = 1 << 20;

/// A config repository in etcd; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct EtcdRepository {
    inner: Arc<Inner>,
}

struct Inner {
    client: LazyClient,
    prefix: String,
    default_label: String,
    location: String,
    /// Every file by label and name, as etcd has them.
    files: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    /// Snapshots built since the last change, by label.
    snapshots: Mutex<BTreeMap<String, Arc<Snapshot>>>,
    /// Bumped at every change.
    changes: watch::Sender<u64>,
    /// Set once the first read is in.
    ready: watch::Sender<bool>,
    failing: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRepository")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl EtcdRepository {
    /// The files of the etcd cluster at `url` under `/msa/config/<label>/`, followed from a
    /// task (call inside a tokio runtime). Connects on first use; the URL is checked now.
    pub fn open(url: &str, default_label: &str) -> Result<EtcdRepository, EtcdError> {
        Ok(Self::with_client(
            LazyClient::new(url)?,
            PREFIX,
            default_label,
            &msa_core::secrets::mask_url(url),
        ))
    }

    /// The same through `client`, under `prefix`; `location` names it in property
    /// sources.
    pub fn with_client(
        client: impl Into<LazyClient>,
        prefix: &str,
        default_label: &str,
        location: &str,
    ) -> EtcdRepository {
        let repository = EtcdRepository {
            inner: Arc::new(Inner {
                client: client.into(),
                prefix: format!("{}/config/", prefix.trim_end_matches('/')),
                default_label: default_label.to_owned(),
                location: location.to_owned(),
                files: Mutex::default(),
                snapshots: Mutex::default(),
                changes: watch::Sender::new(0),
                ready: watch::Sender::new(false),
                failing: Mutex::default(),
            }),
        };
        let follower = Arc::downgrade(&repository.inner);
        let (client, prefix) = (
            repository.inner.client.clone(),
            repository.inner.prefix.clone(),
        );
        tokio::spawn(msa_core::etcd::follow(client, prefix, move |update| {
            let Some(inner) = follower.upgrade() else {
                return false;
            };
            EtcdRepository { inner }.apply(update);
            true
        }));
        repository
    }

    /// Why following etcd fails, while it does.
    pub fn failing(&self) -> Option<String> {
        lock(&self.inner.failing).clone()
    }

    /// A receiver that changes whenever a file does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The files of `label` (the default label without one). Waits for the first read of
    /// etcd (at most 10 s; then what is known).
    pub async fn snapshot(&self, label: Option<&str>) -> Result<Arc<Snapshot>, LabelError> {
        let mut ready = self.inner.ready.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        let label = label.unwrap_or(&self.inner.default_label);
        if let Some(snapshot) = lock(&self.inner.snapshots).get(label) {
            return Ok(snapshot.clone());
        }
        let files = lock(&self.inner.files);
        let Some(texts) = files.get(label) else {
            if let Some(reason) = self.failing() {
                return Err(LabelError::Repository(reason));
            }
            return Err(LabelError::Unknown(label.to_owned()));
        };
        let mut hash = Sha256::new();
        let mut parsed = BTreeMap::new();
        for (name, bytes) in texts {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(bytes);
            hash.update([0]);
            let Some(format) = name
                .rsplit_once('.')
                .and_then(|(_, ext)| EXTENSIONS.iter().find(|(e, _)| *e == ext))
                .map(|(_, f)| *f)
            else {
                continue;
            };
            parsed.insert(name.clone(), format::parse_bytes(name, format, bytes));
        }
        drop(files);
        let snapshot = Arc::new(Snapshot {
            location: format!("{}{}{label}", self.inner.location, self.inner.prefix),
            version: hex::encode(&hash.finalize()[..20]),
            files: parsed,
        });
        lock(&self.inner.snapshots).insert(label.to_owned(), snapshot.clone());
        Ok(snapshot)
    }

    /// `(label, file)` of a key under the prefix.
    fn split(&self, key: &[u8]) -> Option<(String, String)> {
        let key = std::str::from_utf8(key).ok()?;
        let (label, file) = key.strip_prefix(&self.inner.prefix)?.split_once('/')?;
        (!label.is_empty() && !file.is_empty()).then(|| (label.to_owned(), file.to_owned()))
    }

    fn changed(&self) {
        lock(&self.inner.snapshots).clear();
        self.inner.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Applies what the follower of etcd heard.
    fn apply(&self, update: Update<'_>) {
        match update {
            Update::All(kvs) => {
                let mut files: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
                for kv in kvs {
                    if let Some((label, file)) = self.split(kv.key())
                        && let Some(bytes) = bounded(kv.key(), kv.value())
                    {
                        files.entry(label).or_default().insert(file, bytes);
                    }
                }
                *lock(&self.inner.files) = files;
                *lock(&self.inner.failing) = None;
                self.inner.ready.send_replace(true);
            }
            Update::Events(events) => {
                let mut files = lock(&self.inner.files);
                for event in events {
                    let Some(kv) = event.kv() else { continue };
                    let Some((label, file)) = self.split(kv.key()) else {
                        continue;
                    };
                    match event.event_type() {
                        EventType::Put => {
                            if let Some(bytes) = bounded(kv.key(), kv.value()) {
                                files.entry(label).or_default().insert(file, bytes);
                            }
                        }
                        EventType::Delete => {
                            if let Some(label_files) = files.get_mut(&label) {
                                label_files.remove(&file);
                                if label_files.is_empty() {
                                    files.remove(&label);
                                }
                            }
                        }
                    }
                }
            }
            // The last known files are served meanwhile.
            Update::Broken(error) => {
                *lock(&self.inner.failing) = Some(error.to_string());
                return;
            }
        }
        self.changed();
    }
}

/// A file's bytes; `None` (with a warning) past [`MAX_FILE`].
fn bounded(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    if value.len() <= MAX_FILE {
        return Some(value.to_vec());
    }
    tracing::warn!(key = %String::from_utf8_lossy(key), bytes = value.len(), limit = MAX_FILE, "config file in etcd skipped: too large");
    None
}
