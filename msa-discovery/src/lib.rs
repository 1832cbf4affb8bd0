//! Service discovery for msa: the Eureka-compatible registry server (`msa-registry`), the
//! discovery client, and the client-side load balancer.
//!
//! **Status: placeholder.** This release only reserves the crate in the workspace; the
//! registry, `Registration`, the `Discovery` backends and the load balancer arrive with the
//! msa-discovery milestone. The instance model they share is already in
//! [`msa_core::ServiceInstance`].

pub use msa_core::{InstanceStatus, ServiceInstance};
