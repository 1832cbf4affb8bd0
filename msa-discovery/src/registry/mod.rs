//! The registry: instances, leases and changes ([`Store`]) behind the Eureka-compatible
//! HTTP API ([`RegistryServer`], the `msa-registry` binary).

mod server;
mod store;

pub use self::server::{MAX_WATCH, RegistryServer, SWEEP_INTERVAL};
pub use self::store::{MetadataError, NotFound, Store, StoreConfig};
