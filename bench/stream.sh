#!/usr/bin/env bash
# Messaging: publish and consume throughput and end-to-end latency through msa-stream's
# NATS binder against the raw async-nats JetStream client, side by side in one run on one
# nats-server (file storage), plus msa-stream's in-process binder. Prints a markdown table
# (medians of the rounds). Goal: msa-stream >= 0.9x the raw client's throughput.
#
# Usage: bench/stream.sh [MESSAGES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-50000}"
rounds="${2:-3}"
. bench/lib.sh
need nats-server

cargo build --profile dist -q -p msa-stream --features nats --example throughput
port="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$port"

echo "nats-server $(nats-server --version | awk '{print $2}') on 127.0.0.1:$port, $messages messages of ~100 B, $rounds rounds ($(machine))"
echo
"$bin/examples/throughput" --url "nats://127.0.0.1:$port" --messages "$messages" --rounds "$rounds"
