//! Central configuration for msa: [`server`], a Spring Cloud Config-compatible config
//! server (the `msa-config-server` binary), with a watch API so changes reach clients
//! without a message bus.
//!
//! **Status:** the server serves a directory repository. The git backend, `{cipher}`
//! values and the live-reloading client are in progress.

pub mod server;
