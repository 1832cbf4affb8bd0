//! Resilience layers for msa, after Resilience4j's model: tower layers for any service
//! whose error is `Into<BoxError>`, configured with Resilience4j's property names.
//!
//! | layer | what it does | rejection |
//! |---|---|---|
//! | [`circuit_breaker`] | stops calling a failing downstream, probes it, resumes | [`CircuitOpen`](circuit_breaker::CircuitOpen) |
//! | [`retry`] | tries failed calls again, with backoff, jitter and a budget | the last error |
//! | [`timeout`] | cancels calls that take too long | [`Elapsed`](timeout::error::Elapsed) |
//! | [`bulkhead`] | bounds concurrent calls | [`BulkheadFull`](bulkhead::error::BulkheadFull) |
//! | [`rate_limit`] | bounds the call rate (lock-free GCRA), optionally per key | [`RateLimited`](rate_limit::error::RateLimited) |
//! | [`fallback`] | turns errors and rejections into responses | — |
//!
//! [`stack::Resilience`] builds the usual combination for a named downstream from one
//! config section. Rejections are typed: test them with `err.is::<CircuitOpen>()`.
//!
//! The user guide's resilience chapter (`docs/resilience.md`) walks through each layer,
//! stacking and configuration.

mod box_errors;
pub mod bulkhead;
pub mod circuit_breaker;
mod classify;
mod clock;
mod deferred;
pub mod fallback;
mod metrics;
#[cfg(feature = "reqwest-middleware")]
pub mod middleware;
pub mod rate_limit;
pub mod retry;
pub mod section;
pub mod stack;
pub mod timeout;

pub use self::box_errors::BoxErrors;
pub use self::classify::{AnyResponse, Classify, ClassifyFn, HttpStatus, Outcome, classify_fn};
pub use self::clock::ClockSource;
pub use self::deferred::ResponseFuture as DeferredFuture;
pub use self::section::{BASE_CONFIG, DEFAULT_CONFIG, RESILIENCE4J_ONLY, Section, SectionError};
pub use msa_core::BoxError;
