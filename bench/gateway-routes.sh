#!/usr/bin/env bash
# Route scaling: msa-gateway with 10 and with 10,000 routes (each Path=/svc{N}/**), wrk
# hitting the last route; alternating, 3 rounds. Also the peak RSS of the gateway while
# wrk holds 1,000 keep-alive connections. Goals: 10,000-route req/s >= 0.9x the 10-route
# req/s; peak RSS at 1,000 connections <= 20 MB.
#
# Usage: bench/gateway-routes.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
rounds="${2:-3}"
. bench/lib.sh

need wrk
cargo build --profile dist -q -p msa-gateway --bin msa-gateway --example upstream

up_port="$(free_port)"
"$bin/examples/upstream" --bind "127.0.0.1:$up_port" >/dev/null &
pids+=($!)

routes() { # count port file
  { echo "routes:"
    for n in $(seq 1 "$1"); do
      printf '  - id: svc%d\n    uri: http://127.0.0.1:%d\n    predicates: [ "Path=/svc%d/**" ]\n' "$n" "$up_port" "$n"
    done
  } > "$3"
}
small_port="$(free_port)"; large_port="$(free_port)"
routes 10 "$small_port" "$work/small.yaml"
routes 10000 "$large_port" "$work/large.yaml"
RUST_LOG=warn "$bin/msa-gateway" --config "$work/small.yaml" --bind "127.0.0.1:$small_port" 2>/dev/null &
small_pid=$!
pids+=($small_pid)
RUST_LOG=warn "$bin/msa-gateway" --config "$work/large.yaml" --bind "127.0.0.1:$large_port" 2>/dev/null &
large_pid=$!
pids+=($large_pid)
wait_port "$up_port"; wait_port "$small_port"; wait_port "$large_port"

rps() { wrk -t1 -c64 -d"${seconds}s" "http://127.0.0.1:$1$2" | awk '/Requests\/sec/ {print $2}'; }
echo "msa-gateway, 10 vs 10,000 routes, last route hit; wrk -t1 -c64 -d${seconds}s ($(machine))"
echo
echo "| round | 10 routes req/s | 10,000 routes req/s | ratio |"
echo "|---:|---:|---:|---:|"
small_total=0; large_total=0
for round in $(seq 1 "$rounds"); do
  small="$(rps "$small_port" /svc10/x)"
  large="$(rps "$large_port" /svc10000/x)"
  echo "| $round | $small | $large | $(awk -v l="$large" -v s="$small" 'BEGIN { printf "%.2f", l / s }')x |"
  small_total="$(awk -v a="$small_total" -v b="$small" 'BEGIN { print a + b }')"
  large_total="$(awk -v a="$large_total" -v b="$large" 'BEGIN { print a + b }')"
done
echo
awk -v l="$large_total" -v s="$small_total" 'BEGIN { printf "All rounds: 10,000 routes at %.2fx the req/s of 10.\n", l / s }'

echo
rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %.1f MB  ", $1, $2 / 1024}' "/proc/$1/status"; }
for which in small large; do
  if [ "$which" = small ]; then pid="$small_pid"; port="$small_port"; path=/svc10/x; name="10-route"
  else pid="$large_pid"; port="$large_port"; path=/svc10000/x; name="10,000-route"; fi
  echo "$name gateway before: $(rss "$pid")"
  wrk -t1 -c1000 -d"${seconds}s" "http://127.0.0.1:$port$path" >/dev/null
  echo "$name gateway after 1,000 keep-alive connections for ${seconds}s: $(rss "$pid")"
done
