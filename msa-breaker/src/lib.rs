//! Resilience layers for msa, after Resilience4j's model.

pub mod circuit_breaker;
mod classify;
mod clock;
mod duration;

pub use self::classify::{AnyResponse, Classify, ClassifyFn, HttpStatus, Outcome, classify_fn};
pub use self::clock::ClockSource;
pub use msa_core::BoxError;
