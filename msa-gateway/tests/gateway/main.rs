//! The msa-gateway binary over real HTTP, by topic.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod config;
mod cors;
mod custom;
mod locator;
mod observe;
mod resilience;
mod routing;
mod tls;
mod upstreams;
mod wire;
