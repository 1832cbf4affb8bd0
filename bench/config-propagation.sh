#!/usr/bin/env bash
# Config propagation: 100 live clients; a file changes; how long until every client holds
# the new value? Prints a markdown table (p50/p99/max over all clients and changes).
# Goal: p99 <= 500 ms.
#
# Usage: bench/config-propagation.sh [CLIENTS] [CHANGES] [STORE]
#   STORE: dir (default: msa-config-server on a directory), or etcd (a 3-member etcd
#   cluster: clients watching msa-config-server --etcd, then clients reading etcd
#   themselves through an etcd:// URI, both in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-100}"
changes="${2:-10}"
store="${3:-dir}"
. bench/lib.sh

case "$store" in
  dir)
    cargo build --profile dist -q -p msa-config --bin msa-config-server --example propagation
    repo="$work/repo"
    mkdir -p "$repo"
    printf 'shared: true\n' > "$repo/application.yml"
    start_server msa-config-server --dir "$repo"
    echo "msa-config-server on $addr (a directory), $clients clients, $changes changes ($(machine))"
    echo
    "$bin/examples/propagation" --server "http://$addr" --repo "$repo" --clients "$clients" --rounds "$changes"
    ;;
  etcd)
    need etcd
    cargo build --profile dist -q -p msa-config --features etcd --bin msa-config-server --example propagation
    start_etcd_cluster 3
    start_server msa-config-server --etcd "etcd://$etcd_endpoints"
    echo "3-member etcd cluster, $clients clients, $changes changes ($(machine))"
    echo
    echo "Clients of msa-config-server --etcd (on $addr):"
    echo
    "$bin/examples/propagation" --etcd "$etcd_endpoints" --server "http://$addr" --clients "$clients" --rounds "$changes"
    echo
    echo "Clients reading etcd themselves (etcd://):"
    echo
    "$bin/examples/propagation" --etcd "$etcd_endpoints" --server "etcd://$etcd_endpoints" --clients "$clients" --rounds "$changes"
    ;;
  *) echo "store: dir or etcd" >&2; exit 2 ;;
esac
