#!/usr/bin/env bash
# Config propagation: 100 live clients on one msa-config-server; a file changes; how long
# until every client holds the new value? Prints a markdown table (p50/p99/max over all
# clients and changes). Goal: p99 <= 500 ms.
#
# Usage: bench/config-propagation.sh [CLIENTS] [CHANGES]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-100}"
changes="${2:-10}"
. bench/lib.sh

cargo build --profile dist -q -p msa-config --bin msa-config-server --example propagation
repo="$work/repo"
mkdir -p "$repo"
printf 'shared: true\n' > "$repo/application.yml"
start_server msa-config-server --dir "$repo"

echo "msa-config-server on $addr, $clients clients, $changes changes ($(machine))"
echo
"$bin/examples/propagation" --server "http://$addr" --repo "$repo" --clients "$clients" --rounds "$changes"
