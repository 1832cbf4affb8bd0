//! The msa API gateway (`msa-gateway`): routes, predicates and filters in Spring Cloud
//! Gateway's vocabulary, on a pooled hyper client.
//!
//! **Status: placeholder.** This release only reserves the crate in the workspace; the
//! gateway arrives with the msa-gateway milestone.

pub use msa_core::BoxError;
