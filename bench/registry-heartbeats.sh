#!/usr/bin/env bash
# Registry heartbeat throughput: 10,000 instances registered on msa-registry, then wrk
# renews them (PUT /eureka/apps/BENCH/{id}) from 64 keep-alive connections; 3 rounds.
# Prints a markdown table of heartbeats per second and wrk's latency percentiles.
# Goal: >= 50,000 heartbeats/s on this machine.
#
# With STORE `etcd`, the registry keeps its instances in a 3-member etcd cluster on
# loopback (`--store etcd://...`): a registration is a lease grant and a put, a heartbeat
# a lease keep-alive. The registration rate is printed too.
#
# Usage: bench/registry-heartbeats.sh [INSTANCES] [SECONDS] [memory|etcd]
set -euo pipefail
cd "$(dirname "$0")/.."
instances="${1:-10000}"
seconds="${2:-10}"
store="${3:-memory}"
. bench/lib.sh

need wrk
features=()
store_args=()
if [ "$store" = etcd ]; then
  need etcd
  features=(--features etcd)
  start_etcd_cluster 3
  store_args=(--store "etcd://$etcd_endpoints")
fi
cargo build --profile dist -q -p msa-discovery "${features[@]}" --bin msa-registry --example register_many
out="$work/wrk.out"
start_server msa-registry "${store_args[@]}"
registered="$("$bin/examples/register_many" --registry "http://$addr" --count "$instances")"

echo "msa-registry ($store store) on $addr, $instances instances, wrk -t1 -c64 -d${seconds}s ($(machine))"
echo "$registered"
echo
echo "| round | heartbeats/s | p50 | p99 | non-2xx |"
echo "|---:|---:|---:|---:|---:|"
for round in 1 2 3; do
  INSTANCES="$instances" wrk -t1 -c64 -d"${seconds}s" --latency -s bench/registry-heartbeats.lua "http://$addr" >"$out"
  rps="$(awk '/Requests\/sec/ {print $2}' "$out")"
  p50="$(awk '$1 == "50%" {print $2}' "$out")"
  p99="$(awk '$1 == "99%" {print $2}' "$out")"
  bad="$(awk '/Non-2xx/ {print $NF}' "$out")"
  echo "| $round | $rps | $p50 | $p99 | ${bad:-0} |"
done
