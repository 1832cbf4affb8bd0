//! Run with: cargo run --release --example shop
//!
//! The shop estate: msa-registry (127.0.0.1:8761), msa-config-server (127.0.0.1:8888,
//! serving examples/shop/config), msa-gateway for the web (127.0.0.1:8080, routes in
//! examples/shop/gateway.yaml) and for the phone app (127.0.0.1:8081, a backend for
//! frontend: gateway-mobile.yaml, with the shop's own filter in bff.rs), nats-server (a
//! free port, throwaway data: the services' messages), and five services written with msa — orders (2 instances), inventory (2),
//! payments (1), order-history (1) and notifications (1) — each in its own process with
//! its own SQLite database, registered with the registry and configured by the config
//! server, and msa-admin (127.0.0.1:8790) showing them all, receiving every process's
//! traces and logs over OTLP. See docs/shop.md.
//!
//! The same executable is every process: with no subcommand it is the estate and starts
//! the others as `shop registry`, `shop orders`, ...

mod bff;
mod common;
mod estate;
mod history;
mod inventory;
mod notifications;
mod orders;
mod payments;
mod servers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "shop", about = "The msa shop estate")]
struct Cli {
    #[command(subcommand)]
    command: Option<Process>,
    #[command(flatten)]
    estate: estate::EstateArgs,
}

#[derive(Debug, Subcommand)]
enum Process {
    /// msa-registry.
    Registry(servers::ServerArgs),
    /// msa-config-server over a directory (--source DIR).
    ConfigServer(servers::ServerArgs),
    /// msa-gateway with a routes file (--source FILE.yaml).
    Gateway(servers::ServerArgs),
    /// msa-admin (the estate's dashboard and OTLP receiver).
    Admin(Box<servers::AdminArgs>),
    /// The orders service.
    Orders(common::ServiceArgs),
    /// The inventory service.
    Inventory(common::ServiceArgs),
    /// The payments service.
    Payments(common::ServiceArgs),
    /// The order-history service (a read model of orders' events).
    OrderHistory(common::ServiceArgs),
    /// The notifications service (emails, logged).
    Notifications(common::ServiceArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        None => ("shop", estate::run(cli.estate).await),
        Some(Process::Registry(args)) => ("msa-registry", servers::registry(args).await),
        Some(Process::ConfigServer(args)) => {
            ("msa-config-server", servers::config_server(args).await)
        }
        Some(Process::Gateway(args)) => ("msa-gateway", servers::gateway(args).await),
        Some(Process::Admin(args)) => ("msa-admin", servers::admin(*args).await),
        Some(Process::Orders(args)) => ("orders", orders::run(args).await),
        Some(Process::Inventory(args)) => ("inventory", inventory::run(args).await),
        Some(Process::Payments(args)) => ("payments", payments::run(args).await),
        Some(Process::OrderHistory(args)) => ("order-history", history::run(args).await),
        Some(Process::Notifications(args)) => ("notifications", notifications::run(args).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}
