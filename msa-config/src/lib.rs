//! Central configuration for msa: the Spring Cloud Config-compatible server
//! (`msa-config-server`) and the live-reloading config client.
//!
//! **Status: placeholder.** This release only reserves the crate in the workspace; the
//! server and the client arrive with the msa-config milestone. Refresh hooks for
//! `/actuator/refresh` are already in [`msa_core::actuator::RefreshHook`].

pub use msa_core::actuator::RefreshHook;
