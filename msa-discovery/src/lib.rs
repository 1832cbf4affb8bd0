//! Service discovery for msa: the Eureka-compatible registry server (`msa-registry`), the
//! discovery client, and the client-side load balancer.
//!
//! **Status: in progress.** [`eureka`], Eureka's wire model (JSON) with the quirks real
//! clients depend on, and [`registry::Store`], the registry's leases and changes, are
//! here; the registry's HTTP server, `Registration`, the `Discovery` backends and the load
//! balancer are not yet. The instance model they share is
//! [`msa_core::ServiceInstance`].

pub mod balance;
pub mod discovery;
pub mod eureka;
pub mod registration;
pub mod registry;

pub use msa_core::{InstanceStatus, ServiceInstance};
