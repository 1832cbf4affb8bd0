//! `msa-gateway --config FILE.yaml [--bind ADDR] [--management-bind ADDR]
//! [--management-token-file PATH]`: the API gateway (see `msa_gateway::cli`).

use std::process::ExitCode;

use msa_gateway::filter::Filters;

// A proxy allocates a little for every request; mimalloc's thread-local free lists serve
// that with no contention between the worker threads (measured: bench/gateway-vs-nginx.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    msa_gateway::cli::main(Filters::new()).await
}
