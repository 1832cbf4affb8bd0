//! Central configuration for msa: [`server`], a Spring Cloud Config-compatible config
//! server (the `msa-config-server` binary), with a watch API so changes reach clients
//! without a message bus; and [`client`], which reads it (or a Spring server) as a
//! `config::Source` and keeps a typed configuration live.
//!
//! The user guide's chapter (`docs/config.md`) covers running the server, the repository
//! layout, secrets and the client.

pub mod client;
pub mod server;
