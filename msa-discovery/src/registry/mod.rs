//! The registry: instances, leases and changes ([`Store`]) behind the Eureka-compatible
//! HTTP API ([`RegistryServer`], the `msa-registry` binary).

#[cfg(feature = "etcd")]
mod etcd;
mod server;
mod store;

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdStore;
pub use self::server::{MAX_WATCH, RegistryServer, SWEEP_INTERVAL};
pub use self::store::{MetadataError, NotFound, Store, StoreConfig};
