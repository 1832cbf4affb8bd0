//! The registry: instances, leases and changes, behind the Eureka-compatible server.
//!
//! **Status:** the state ([`Store`]) is here; the HTTP server and the `msa-registry`
//! binary are next.

mod store;

pub use self::store::{NotFound, Store, StoreConfig};
