//! Service discovery for msa: the Eureka-compatible registry server (`msa-registry`), the
//! discovery client, and the client-side load balancer.
//!
//! - [`registry`] (feature `server`): the registry's state ([`registry::Store`]) and its HTTP API
//!   ([`registry::RegistryServer`]): Eureka's REST API in JSON and XML, and a native
//!   watch that answers within milliseconds of a change.
//! - [`registration`]: keeps a running service registered, and deregisters it on shutdown.
//! - [`discovery`]: where a service's instances are, behind one trait: msa-registry's
//!   watch, any Eureka server, static lists, DNS.
//! - [`balance`]: the load balancer, a tower layer (and reqwest middleware) that sends
//!   `http://<service>/...` to a live instance.
//! - [`service_url`]: registry URLs as Spring writes them (`defaultZone`), with failover.
//! - [`eureka`]: Eureka's wire model, with the quirks real clients depend on.
//!
//! The instance model they share is [`msa_core::ServiceInstance`]. The guide's chapter
//! `docs/discovery.md` shows them together.

pub mod balance;
pub mod discovery;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod eureka;
pub mod registration;
#[cfg(feature = "server")]
pub mod registry;
pub mod service_url;

pub use msa_core::{InstanceStatus, ServiceInstance};
