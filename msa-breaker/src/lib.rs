//! Resilience layers for msa: circuit breaker, retry with budget, timeout, bulkhead, rate
//! limiter and fallback, after Resilience4j's model.
//!
//! **Status: placeholder.** This release only reserves the crate in the workspace; the
//! layers arrive with the msa-breaker milestone. Until then, use `tower`'s own `timeout`,
//! `limit` and `retry` layers.

pub use msa_core::BoxError;
