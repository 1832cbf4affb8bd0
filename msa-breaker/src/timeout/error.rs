//! The timeout's error.

use std::fmt;
use std::time::Duration;

/// The call took longer than the timeout and was cancelled. Detect it with
/// `err.is::<Elapsed>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(pub(super) Duration);

impl Elapsed {
    /// The timeout that expired.
    pub fn timeout(&self) -> Duration {
        self.0
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the call did not finish within {:?} and was cancelled",
            self.0
        )
    }
}

impl std::error::Error for Elapsed {}
