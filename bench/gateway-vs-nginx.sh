#!/usr/bin/env bash
# Gateway throughput: the same upstream behind nginx (reverse proxy with upstream
# keepalive) and behind msa-gateway (one route), wrk -t1 -c64 against each in turn,
# alternating, 3 rounds. Prints req/s and p50/p99 side by side with the ratio.
# Goal: msa-gateway >= 1.0x nginx's req/s, p99 no worse.
#
# Both run at their default log levels. With ACCESS_LOG `on`, both also write an access
# log line per request to a file, buffered the same way (64 KiB, flushed every second:
# nginx's `access_log ... buffer=64k flush=1s`, msa-gateway's `msa.gateway.access-log`).
#
# With TLS `on`, both terminate TLS with the same certificate (a P-256 key, made for the
# run): nginx with OpenSSL, msa-gateway with rustls (`--ssl-certificate`); wrk speaks
# HTTPS/1.1 with keep-alive, so handshakes are a small part of the work. Goal: >= 1.0x.
#
# Usage: bench/gateway-vs-nginx.sh [SECONDS] [ROUNDS] [CONNECTIONS] [ACCESS_LOG: off|on] [TLS: off|on]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
rounds="${2:-3}"
connections="${3:-64}"
access_log="${4:-off}"
tls="${5:-off}"
. bench/lib.sh

need wrk nginx
scheme=http
if [ "$tls" = on ]; then
  need openssl
  scheme=https
fi
cargo build --profile dist -q -p msa-gateway --bin msa-gateway --example upstream
trap 'nginx_proxy_stop; cleanup' EXIT

up_port="$(free_port)"; nginx_port="$(free_port)"; gw_port="$(free_port)"
gw_tls=()
if [ "$tls" = on ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  gw_tls=(--ssl-certificate "$work/cert.pem" --ssl-certificate-private-key "$work/key.pem")
fi

"$bin/examples/upstream" --bind "127.0.0.1:$up_port" >/dev/null &
pids+=($!)

start_nginx_proxy "$nginx_port" "$up_port" "$access_log" "$tls"

one_route_gateway "$gw_port" "$up_port" >"$work/gateway.yaml"
if [ "$access_log" = on ]; then
  printf 'msa:\n  gateway:\n    access-log:\n      enabled: true\n      path: %s\n' \
    "$work/gateway-access.log" >>"$work/gateway.yaml"
fi
"$bin/msa-gateway" --config "$work/gateway.yaml" "${gw_tls[@]}" 2>"$work/gateway.log" &
pids+=($!)

for port in "$up_port" "$nginx_port" "$gw_port"; do wait_port "$port"; done

run() { # name port
  wrk -t1 -c"$connections" -d"${seconds}s" --latency "$scheme://127.0.0.1:$2/api/ping" >"$work/$1.out"
  local rps p50 p99 errors
  rps="$(awk '/Requests\/sec/ {print $2}' "$work/$1.out")"
  p50="$(awk '$1 == "50%" {print $2}' "$work/$1.out")"
  p99="$(awk '$1 == "99%" {print $2}' "$work/$1.out")"
  errors="$(awk '/Non-2xx|Socket errors/ {print}' "$work/$1.out" | tr '\n' ' ')"
  echo "$rps $p50 $p99 ${errors:-}"
}

echo "upstream :$up_port, nginx :$nginx_port ($(nproc) workers), msa-gateway :$gw_port; wrk -t1 -c$connections -d${seconds}s; access logs $access_log; TLS $tls; $(machine)"
echo
echo "| round | nginx req/s | nginx p50 | nginx p99 | msa-gateway req/s | msa-gateway p50 | msa-gateway p99 | ratio |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
n_total=0; g_total=0; p99_better=0
for round in $(seq 1 "$rounds"); do
  read -r n_rps n_p50 n_p99 n_err < <(run nginx "$nginx_port")
  read -r g_rps g_p50 g_p99 g_err < <(run gateway "$gw_port")
  ratio="$(awk -v g="$g_rps" -v n="$n_rps" 'BEGIN { printf "%.2f", g / n }')"
  echo "| $round | $n_rps | $n_p50 | $n_p99 | $g_rps | $g_p50 | $g_p99 | ${ratio}x |"
  [ -n "${n_err:-}${g_err:-}" ] && echo "errors: nginx: ${n_err:-none}; msa-gateway: ${g_err:-none}" >&2
  n_total="$(awk -v a="$n_total" -v b="$n_rps" 'BEGIN { print a + b }')"
  g_total="$(awk -v a="$g_total" -v b="$g_rps" 'BEGIN { print a + b }')"
  # wrk prints latencies in us, ms or s.
  p99_better="$(awk -v a="$p99_better" -v n="$n_p99" -v g="$g_p99" 'function us(t) {
      if (t ~ /us$/) return t + 0; if (t ~ /ms$/) return t * 1000; return t * 1000000 }
    BEGIN { print a + (us(g) <= us(n)) }')"
done
echo
awk -v n="$n_total" -v g="$g_total" -v r="$rounds" -v b="$p99_better" 'BEGIN {
  printf "All rounds: msa-gateway %.2fx nginx'"'"'s requests; its p99 no worse in %d of %d rounds.\n", g / n, b, r }'

if [ "$access_log" = on ]; then
  echo "Access log lines: nginx $(wc -l <"$work/nginx-access.log"), msa-gateway $(wc -l <"$work/gateway-access.log")."
fi
