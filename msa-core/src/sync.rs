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
