//! Locks that outlive a panic: msa's shared state is written whole under its lock (no
//! invariant a panicking writer could leave half-done), so a poisoned lock is taken as it
//! is rather than turned into a panic of every later caller.
//!
//! ```
//! use std::sync::Mutex;
//!
//! let counts = Mutex::new(0);
//! *msa_core::sync::lock(&counts) += 1;
//! assert_eq!(*msa_core::sync::lock(&counts), 1);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex` locked, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `lock` read, poisoned or not.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `lock` written, poisoned or not.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `key` is seen here for the first time in this process: for what should be said
/// once (a setting that is accepted but ignored, a deprecated key), however often the
/// configuration that holds it is read. Remembers at most 1,000 keys; past that, every key
/// counts as seen.
///
/// ```
/// assert!(msa_core::sync::first_time("doc.example.key"));
/// assert!(!msa_core::sync::first_time("doc.example.key"));
/// ```
pub fn first_time(key: &str) -> bool {
    static SEEN: Mutex<std::collections::BTreeSet<String>> =
        Mutex::new(std::collections::BTreeSet::new());
    let mut seen = lock(&SEEN);
    seen.len() < 1_000 && seen.insert(key.to_owned())
}
