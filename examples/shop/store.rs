//! The shop's data: JSON files in a directory that every instance of a service shares,
//! standing in for the database a real estate would use. Writes go to a temporary file
//! renamed into place, and `locked` serialises read-modify-write sequences across
//! processes with an advisory file lock, so two instances never sell the same widget.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A directory of JSON documents, one file per key.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (made if missing).
    pub(crate) fn open(dir: impl Into<PathBuf>) -> io::Result<Store> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Store { dir })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{key:?} is not a valid key"),
            ));
        }
        Ok(self.dir.join(format!("{key}.json")))
    }

    /// Runs `f` holding the store's lock (shared by every process using the directory).
    pub(crate) fn locked<R>(&self, f: impl FnOnce(&Store) -> io::Result<R>) -> io::Result<R> {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        lock.lock()?;
        let result = f(self);
        drop(lock); // closing the file releases the lock
        result
    }

    /// The document at `key`, if there is one.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        match std::fs::read(self.path(key)?) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes `value` at `key`, atomically.
    pub(crate) fn put<T: Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let path = self.path(key)?;
        let temporary = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&temporary, serde_json::to_vec_pretty(value)?)?;
        std::fs::rename(&temporary, &path)
    }

    /// Every document, in no particular order.
    pub(crate) fn all<T: DeserializeOwned>(&self) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") && !is_hidden(&path) {
                let bytes = std::fs::read(&path)?;
                if let Ok(value) = serde_json::from_slice(&bytes) {
                    out.push(value);
                }
            }
        }
        Ok(out)
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}
