#!/usr/bin/env bash
# Registry heartbeat throughput: 10,000 instances registered on msa-registry, then wrk
# renews them (PUT /eureka/apps/BENCH/{id}) from 64 keep-alive connections; 3 rounds.
# Prints a markdown table of heartbeats per second and wrk's latency percentiles.
# Goal: >= 50,000 heartbeats/s on this machine.
#
# Usage: bench/registry-heartbeats.sh [INSTANCES] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
instances="${1:-10000}"
seconds="${2:-10}"
. bench/lib.sh

need wrk
cargo build --profile dist -q -p msa-discovery --bin msa-registry --example register_many
out="$work/wrk.out"
start_server msa-registry
"$bin/examples/register_many" --registry "http://$addr" --count "$instances" >/dev/null

echo "msa-registry on $addr, $instances instances, wrk -t1 -c64 -d${seconds}s ($(machine))"
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
