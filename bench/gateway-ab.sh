#!/usr/bin/env bash
# Two msa-gateway builds side by side: the same upstream behind each (one `Path=/**`
# route), wrk -t1 -c64 against each in turn, alternating. For judging a change to the
# gateway when a machine's rounds vary more than the change: build the old and the new
# binary, copy them aside, and compare them here in one run.
#
# Usage: bench/gateway-ab.sh A_BINARY B_BINARY [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
a="$(realpath "$1")"; b="$(realpath "$2")"
seconds="${3:-8}"
rounds="${4:-4}"
. bench/lib.sh

need wrk
cargo build --profile dist -q -p msa-gateway --example upstream
up_port="$(free_port)"; a_port="$(free_port)"; b_port="$(free_port)"
"$bin/examples/upstream" --bind "127.0.0.1:$up_port" >/dev/null &
pids+=($!)
for side in a b; do
  port="${side}_port"
  one_route_gateway "${!port}" "$up_port" >"$work/$side.yaml"
  RUST_LOG=warn "${!side}" --config "$work/$side.yaml" 2>"$work/$side.log" &
  pids+=($!)
done
for port in "$up_port" "$a_port" "$b_port"; do wait_port "$port"; done

run() { # port -> "req/s p99"
  wrk -t1 -c64 -d"${seconds}s" --latency "http://127.0.0.1:$1/api/ping" >"$work/out"
  echo "$(awk '/Requests\/sec/ {print $2}' "$work/out") $(awk '$1 == "99%" {print $2}' "$work/out")"
}

echo "A: $a"
echo "B: $b"
echo "wrk -t1 -c64 -d${seconds}s, alternating; $(machine)"
echo
echo "| round | A req/s | A p99 | B req/s | B p99 | B/A |"
echo "|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  read -r a_rps a_p99 < <(run "$a_port")
  read -r b_rps b_p99 < <(run "$b_port")
  ratio="$(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN { printf "%.2f", b / a }')"
  echo "| $round | $a_rps | $a_p99 | $b_rps | $b_p99 | ${ratio}x |"
done
