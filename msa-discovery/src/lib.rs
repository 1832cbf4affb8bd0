//! Service discovery for msa: the Eureka-compatible registry server (`msa-registry`), the
//! discovery client, and the client-side load balancer.
//!
//! **Status: in progress.** [`eureka`], Eureka's wire model (JSON) with the quirks real
//! clients depend on, is here; the registry server, `Registration`, the `Discovery`
//! backends and the load balancer are not yet. The instance model they share is
//! [`msa_core::ServiceInstance`].

pub mod eureka;

pub use msa_core::{InstanceStatus, ServiceInstance};
