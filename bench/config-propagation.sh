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
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/msa-target}"

cargo build --release -q -p msa-config --bin msa-config-server --example propagation
bin="$CARGO_TARGET_DIR/release"

repo="$(mktemp -d)"
log="$(mktemp)"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$repo" "$log"
}
trap cleanup EXIT

printf 'shared: true\n' > "$repo/application.yml"
"$bin/msa-config-server" --dir "$repo" --bind 127.0.0.1:0 2>"$log" &
server=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "msa-config-server did not start:" >&2; cat "$log" >&2; exit 1; }

echo "msa-config-server on $addr, $clients clients, $changes changes ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
echo
"$bin/examples/propagation" --server "http://$addr" --repo "$repo" --clients "$clients" --rounds "$changes"
