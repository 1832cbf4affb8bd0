//! What drives a [`CircuitBreakerService`](super::CircuitBreakerService): msa's
//! [`CircuitBreaker`], or (with the `failsafe` feature) a `failsafe::StateMachine`.

use super::{CircuitBreaker, Permit, State};
use crate::Outcome;

/// A circuit breaker implementation a [`CircuitBreakerLayer`](super::CircuitBreakerLayer)
/// can run on.
pub trait Engine: Clone + Send + Sync + 'static {
    /// Leave for one call; records the call's outcome when completed.
    type Permit: EnginePermit;

    /// A permit, or the state that rejects the call.
    fn acquire(&self) -> Result<Self::Permit, State>;

    /// The name rejections carry.
    fn name(&self) -> &str;
}

/// A permit from an [`Engine`].
pub trait EnginePermit: Send + 'static {
    /// Records the call's outcome. Dropping the permit instead records nothing.
    fn complete(self, outcome: Outcome);
}

impl Engine for CircuitBreaker {
    type Permit = Permit;

    #[inline]
    fn acquire(&self) -> Result<Permit, State> {
        CircuitBreaker::acquire(self)
    }

    fn name(&self) -> &str {
        CircuitBreaker::name(self)
    }
}

impl EnginePermit for Permit {
    #[inline]
    fn complete(self, outcome: Outcome) {
        Permit::complete(self, outcome);
    }
}

#[cfg(feature = "failsafe")]
pub use self::failsafe_engine::{Failsafe, FailsafePermit};

#[cfg(feature = "failsafe")]
mod failsafe_engine {
    use std::fmt;

    use failsafe::StateMachine;
    use failsafe::failure_policy::FailurePolicy;

    use super::{Engine, EnginePermit, State};
    use crate::Outcome;

    /// A `failsafe::StateMachine` as an [`Engine`], for services already on failsafe:
    /// `CircuitBreakerLayer::from_failsafe(state_machine)` gives them msa's layer,
    /// classification and typed rejections on failsafe's policies.
    ///
    /// failsafe has no half-open permits and no ignored outcomes: it admits whatever its
    /// policy admits, and an ignored call is recorded as nothing.
    pub struct Failsafe<P, I> {
        machine: StateMachine<P, I>,
        name: std::sync::Arc<str>,
    }

    // StateMachine is a shared handle whatever its policy: no `P: Clone` needed.
    impl<P, I> Clone for Failsafe<P, I> {
        fn clone(&self) -> Self {
            Failsafe {
                machine: self.machine.clone(),
                name: self.name.clone(),
            }
        }
    }

    impl<P, I> fmt::Debug for Failsafe<P, I> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Failsafe")
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }

    impl<P, I> Failsafe<P, I> {
        /// Wraps `machine`; rejections carry `name`.
        pub fn new(name: &str, machine: StateMachine<P, I>) -> Self {
            Failsafe {
                machine,
                name: name.into(),
            }
        }
    }

    /// A call admitted by failsafe.
    pub struct FailsafePermit<P, I>(StateMachine<P, I>);

    impl<P, I> fmt::Debug for FailsafePermit<P, I> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("FailsafePermit")
        }
    }

    impl<P, I> Engine for Failsafe<P, I>
    where
        P: FailurePolicy + Send + Sync + 'static,
        I: failsafe::Instrument + Send + Sync + 'static,
    {
        type Permit = FailsafePermit<P, I>;

        fn acquire(&self) -> Result<Self::Permit, State> {
            if self.machine.is_call_permitted() {
                Ok(FailsafePermit(self.machine.clone()))
            } else {
                Err(State::Open)
            }
        }

        fn name(&self) -> &str {
            &self.name
        }
    }

    impl<P, I> EnginePermit for FailsafePermit<P, I>
    where
        P: FailurePolicy + Send + Sync + 'static,
        I: failsafe::Instrument + Send + Sync + 'static,
    {
        fn complete(self, outcome: Outcome) {
            match outcome {
                Outcome::Success => self.0.on_success(),
                Outcome::Failure => self.0.on_error(),
                Outcome::Ignored => {}
            }
        }
    }
}
