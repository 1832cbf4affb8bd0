//! `msa-admin`: the estate at a glance, and an OTLP/HTTP receiver for its traces and logs.

use std::process::ExitCode;

use clap::Parser;
use msa_admin::cli::{Args, run};

#[tokio::main]
async fn main() -> ExitCode {
    msa_core::shutdown::exit("msa-admin", run(Args::parse()).await)
}
