//! Resilience layers for msa, after Resilience4j's model.

pub mod bulkhead;
pub mod circuit_breaker;
mod classify;
mod clock;
mod deferred;
mod duration;
pub mod fallback;
pub mod rate_limit;
pub mod retry;
mod section;
pub mod stack;
pub mod timeout;

pub use self::classify::{AnyResponse, Classify, ClassifyFn, HttpStatus, Outcome, classify_fn};
pub use self::clock::ClockSource;
pub use self::deferred::ResponseFuture as DeferredFuture;
pub use self::section::{BASE_CONFIG, DEFAULT_CONFIG, Section, SectionError};
pub use msa_core::BoxError;
