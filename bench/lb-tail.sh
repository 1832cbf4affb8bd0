#!/usr/bin/env bash
# Load balancer tail latency: the linkerd "Beyond Round Robin" experiment scaled down.
# 10 upstreams (~2 ms), one 10x slower for the second half of each run, an open-loop
# load through msa's balancer; p50/p99/p99.9 for round robin and P2C-EWMA, and the
# all-healthy baselines, alternated in one run. Goal: P2C-EWMA p99.9 <= 1.5x all-healthy.
#
# Usage: bench/lb-tail.sh [RATE_PER_SEC] [SECONDS_PER_RUN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-1000}"
seconds="${2:-20}"
rounds="${3:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/msa-target}"

cargo build --profile dist -q -p msa-discovery --example lb_tail
echo "10 upstreams, $rate req/s, $seconds s per run, $rounds rounds ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
echo
"$CARGO_TARGET_DIR/dist/examples/lb_tail" --rate "$rate" --seconds "$seconds" --rounds "$rounds"
