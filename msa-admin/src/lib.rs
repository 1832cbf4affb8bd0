//! msa-admin: the estate at a glance.
//!
//! Built so far: the OTLP/HTTP receiver and its bounded store of recent spans and log
//! records ([`otlp`]), which the admin's trace and log pages read. The estate pages
//! (instances from the registry's watch, actuator endpoints, the service graph) and the
//! `msa-admin` binary build on it.

pub mod otlp;
