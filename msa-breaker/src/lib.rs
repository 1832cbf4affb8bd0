//! Resilience layers for msa, after Resilience4j's model.

pub mod circuit_breaker;
mod classify;
mod clock;
mod duration;
mod section;

pub use self::classify::{AnyResponse, Classify, ClassifyFn, HttpStatus, Outcome, classify_fn};
pub use self::clock::ClockSource;
pub use self::section::{BASE_CONFIG, DEFAULT_CONFIG, Section, SectionError};
pub use msa_core::BoxError;
