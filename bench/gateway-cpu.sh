#!/usr/bin/env bash
# Where a proxied request's CPU goes: the same setup as gateway-vs-nginx.sh (one upstream,
# nginx and msa-gateway in front of it, wrk -t1 -c64), and for each run the CPU time
# (user and system) that wrk, the upstream and the proxy spent, divided by the requests
# served. On one machine the proxies share with wrk and the upstream, req/s follows the
# sum of the three; the proxy's own share is all a proxy can change.
#
# Usage: bench/gateway-cpu.sh [SECONDS] [ROUNDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
rounds="${2:-3}"
connections="${3:-64}"
. bench/lib.sh

need wrk nginx
cargo build --profile dist -q -p msa-gateway --bin msa-gateway --example upstream
trap 'nginx_proxy_stop; cleanup' EXIT

up_port="$(free_port)"; nginx_port="$(free_port)"; gw_port="$(free_port)"
"$bin/examples/upstream" --bind "127.0.0.1:$up_port" >/dev/null &
up_pid=$!
pids+=("$up_pid")
start_nginx_proxy "$nginx_port" "$up_port" off off
one_route_gateway "$gw_port" "$up_port" >"$work/gateway.yaml"
"$bin/msa-gateway" --config "$work/gateway.yaml" 2>"$work/gateway.log" &
gw_pid=$!
pids+=("$gw_pid")
for port in "$up_port" "$nginx_port" "$gw_port"; do wait_port "$port"; done

# Clock ticks (user, system) the processes spent so far: cpu_ticks PID...
cpu_ticks() {
  local user=0 system=0 pid u s
  for pid in "$@"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)); system=$((system + s))
  done
  echo "$user $system"
}

run() { # name port pids...
  local name="$1" port="$2"; shift 2
  local u0 s0 p0 q0 u1 s1 p1 q1
  read -r u0 s0 < <(cpu_ticks "$up_pid")
  read -r p0 q0 < <(cpu_ticks "$@")
  # wrk's own CPU, exactly, as its parent sees it when it ends.
  python3 - "$connections" "$seconds" "http://127.0.0.1:$port/api/ping" "$work/$name.out" <<'PY' >"$work/$name.wrk-cpu"
import resource, subprocess, sys
c, s, url, out = sys.argv[1:]
with open(out, "w") as f:
    subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{s}s", "--latency", url], stdout=f, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime, r.ru_stime)
PY
  read -r u1 s1 < <(cpu_ticks "$up_pid")
  read -r p1 q1 < <(cpu_ticks "$@")
  local requests rps wrk_user wrk_system
  requests="$(awk '/requests in/ {print $1}' "$work/$name.out")"
  rps="$(awk '/Requests\/sec/ {print $2}' "$work/$name.out")"
  read -r wrk_user wrk_system <"$work/$name.wrk-cpu"
  awk -v n="$requests" -v t="$(getconf CLK_TCK)" -v rps="$rps" -v name="$name" \
    -v wu="$wrk_user" -v ws="$wrk_system" \
    -v uu=$((u1 - u0)) -v us=$((s1 - s0)) -v pu=$((p1 - p0)) -v ps=$((q1 - q0)) 'BEGIN {
      f = 1e6 / t / n; g = 1e6 / n
      printf "| %s | %.0f | %.1f + %.1f | %.1f + %.1f | %.1f + %.1f | %.1f |\n", name, rps,
        pu * f, ps * f, uu * f, us * f, wu * g, ws * g,
        (pu + ps + uu + us) * f + (wu + ws) * g }'
}

nginx_workers=()
mapfile -t nginx_workers < <(pgrep -P "$(cat "$work/nginx.pid")")
echo "upstream :$up_port, nginx :$nginx_port (${#nginx_workers[@]} workers), msa-gateway :$gw_port; wrk -t1 -c$connections -d${seconds}s; $(machine)"
echo
echo "CPU per request, in microseconds (user + system):"
echo
echo "| proxy | req/s | the proxy | the upstream | wrk | all three |"
echo "|---|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  run nginx "$nginx_port" "${nginx_workers[@]}"
  run msa-gateway "$gw_port" "$gw_pid"
done
