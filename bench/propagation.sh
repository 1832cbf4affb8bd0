#!/usr/bin/env bash
# Discovery propagation: N clients watch a service on one msa-registry; an instance
# deregisters (and, separately, stops renewing as if killed); how long until no client's
# balancer can choose it? Prints a markdown table (p50/p99/max over all clients and
# rounds). Goal: p99 <= 100 ms for a deregistration.
#
# With STORE `etcd`: a 3-member etcd cluster on loopback (throwaway data) and two registry
# replicas on it (`--store etcd://...`); instances register with the first, and the
# clients watch the two in turn, so every change crosses etcd.
#
# Usage: bench/propagation.sh [CLIENTS] [ROUNDS] [LEASE_SECS] [memory|etcd]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-100}"
rounds="${2:-10}"
lease="${3:-3}"
store="${4:-memory}"
. bench/lib.sh

if [ "$store" = memory ]; then
  cargo build --profile dist -q -p msa-discovery --bin msa-registry --example propagation
  start_server msa-registry
  echo "msa-registry on $addr, $clients clients, $rounds rounds ($(machine))"
  echo
  "$bin/examples/propagation" --registry "http://$addr" --clients "$clients" --rounds "$rounds" --lease "$lease"
  exit 0
fi

need etcd
cargo build --profile dist -q -p msa-discovery --features etcd --bin msa-registry --example propagation
start_etcd_cluster 3
replicas=()
for n in 1 2; do
  "$bin/msa-registry" --bind 127.0.0.1:0 --store "etcd://$etcd_endpoints" 2>"$work/registry-$n.log" &
  pids+=($!)
  for _ in $(seq 1 100); do
    replica="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/registry-$n.log" | head -1)"
    [ -n "$replica" ] && break
    sleep 0.1
  done
  replicas+=("http://$replica")
done
echo "two msa-registry replicas on a 3-member etcd $(etcd --version | head -1 | awk '{print $3}') cluster, $clients clients, $rounds rounds ($(machine))"
echo
"$bin/examples/propagation" --registry "${replicas[0]}" --watch "$(IFS=,; echo "${replicas[*]}")" \
  --clients "$clients" --rounds "$rounds" --lease "$lease"
