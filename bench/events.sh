#!/usr/bin/env bash
# msa-events: outbox commit → consumer latency (p50/p99, beside a direct send in the same
# run), event store appends per second (one aggregate; 1,000 aggregates from 8 writers)
# and projection catch-up, on PostgreSQL (a throwaway cluster with its default, durable
# settings) and on SQLite (a file, WAL), through one nats-server. Prints markdown rows.
#
# Usage: bench/events.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-2000}"
. bench/lib.sh
need nats-server
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
[ -x "$pg_bin/initdb" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"; }

cargo build --profile dist -q -p msa-events --example events

nats_port="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port"

# PostgreSQL refuses to run as root: as root, the cluster belongs to `postgres`.
pg_port="$(free_port)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U msa -A trust -E UTF8 --locale=C >"$work/initdb.log" 2>&1
as_pg "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 >"$work/pg.log" 2>&1 &
pids+=($!)
wait_port "$pg_port"
sleep 0.5

echo "nats-server $(nats-server --version | awk '{print $2}'), PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') (fsync on), SQLite (WAL, synchronous=NORMAL), $messages messages each way ($(machine))"
echo
echo "| database | measure | result |"
echo "|---|---|---|"
"$bin/examples/events" --database "postgres://msa@127.0.0.1:$pg_port/postgres" --nats "nats://127.0.0.1:$nats_port" --messages "$messages"
"$bin/examples/events" --database "sqlite://$work/bench.db" --nats "nats://127.0.0.1:$nats_port" --messages "$messages"
