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
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/msa-target}"

cargo build --release -q -p msa-discovery --bin msa-registry --example propagation
bin="$CARGO_TARGET_DIR/release"

log="$(mktemp)"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

"$bin/msa-registry" --bind 127.0.0.1:0 2>"$log" &
server=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "msa-registry did not start:" >&2; cat "$log" >&2; exit 1; }

echo "msa-registry on $addr, $clients clients, $rounds rounds ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
echo
"$bin/examples/propagation" --registry "http://$addr" --clients "$clients" --rounds "$rounds" --lease "$lease"
