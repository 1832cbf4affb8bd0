#!/usr/bin/env bash
# Instructions per proxied request of an msa-gateway binary, counted by valgrind's
# callgrind: repeatable whatever else the machine is doing, so small changes to the
# request path show where req/s rounds are too noisy. 4 keep-alive clients send
# REQUESTS in all through one `Path=/**` route; start-up is included in the total.
#
# Usage: bench/gateway-instructions.sh [BINARY] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
gateway="${1:-}"
requests="${2:-10000}"

need valgrind
cargo build --profile dist -q -p msa-gateway --bin msa-gateway --example upstream
gateway="${gateway:-$bin/msa-gateway}"
up_port="$(free_port)"; gw_port="$(free_port)"
"$bin/examples/upstream" --bind "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
one_route_gateway "$gw_port" "$up_port" >"$work/gateway.yaml"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$gateway" --config "$work/gateway.yaml" 2>"$work/valgrind.log" &
gw_pid=$!
wait_port "$gw_port"
python3 - "$gw_port" "$requests" <<'PY'
import http.client, sys, threading
port, total = int(sys.argv[1]), int(sys.argv[2])
def run(n):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(n):
        connection.request("GET", "/api/ping")
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
clients = [threading.Thread(target=run, args=(total // 4,)) for _ in range(4)]
for client in clients: client.start()
for client in clients: client.join()
PY
kill -INT "$gw_pid"
wait "$gw_pid" || true
# CALLGRIND_OUT=FILE keeps the profile for callgrind_annotate.
if [ -n "${CALLGRIND_OUT:-}" ]; then cp "$work/callgrind.out" "$CALLGRIND_OUT"; fi
total="$(awk '/^totals:/ {print $2}' "$work/callgrind.out")"
echo "$gateway: $total instructions, $((total / requests)) per request ($requests requests, start-up included)"
