//! The circuit breaker's errors.

use std::fmt;
use std::sync::Arc;

use super::State;

/// A call the breaker did not permit: it is open, forced open, or half-open with every
/// probe taken. Detect it with `err.is::<CircuitOpen>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    name: Arc<str>,
    state: State,
}

impl CircuitOpen {
    pub(super) fn new(name: Arc<str>, state: State) -> Self {
        CircuitOpen { name, state }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state that rejected the call.
    pub fn state(&self) -> State {
        self.state
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker '{}' is {} and does not permit further calls",
            self.name, self.state
        )
    }
}

impl std::error::Error for CircuitOpen {}
