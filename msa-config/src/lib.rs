//! Central configuration for msa: [`server`], a Spring Cloud Config-compatible config
//! server (the `msa-config-server` binary), with a watch API so changes reach clients
//! without a message bus; and [`client`], which reads it (or a Spring server) as a
//! `config::Source` and keeps a typed configuration live.
//!
//! **Status:** the server serves a directory repository; the git backend and `{cipher}`
//! values are in progress.

pub mod client;
pub mod server;
