#!/usr/bin/env bash
# Discovery propagation: N clients watch a service on one msa-registry; an instance
# deregisters (and, separately, stops renewing as if killed); how long until no client's
# balancer can choose it? Prints a markdown table (p50/p99/max over all clients and
# rounds). Goal: p99 <= 100 ms for a deregistration.
#
# Usage: bench/propagation.sh [CLIENTS] [ROUNDS] [LEASE_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-100}"
rounds="${2:-10}"
lease="${3:-3}"
. bench/lib.sh

cargo build --profile dist -q -p msa-discovery --bin msa-registry --example propagation
start_server msa-registry

echo "msa-registry on $addr, $clients clients, $rounds rounds ($(machine))"
echo
"$bin/examples/propagation" --registry "http://$addr" --clients "$clients" --rounds "$rounds" --lease "$lease"
