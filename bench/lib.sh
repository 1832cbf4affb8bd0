# Shared by the bench/ scripts: source it after `cd` to the project root.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/msa-target}"
bin="$CARGO_TARGET_DIR/dist"
work="$(mktemp -d)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Installs the Debian packages of tools that are missing: `need wrk nginx etcd`.
need() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || case "$tool" in
      etcd) missing+=(etcd-server) ;;
      *) missing+=("$tool") ;;
    esac
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  exit 1
}

# Starts one of msa's servers on a free port; sets $addr to where it listens (read from
# its `listening addr=...` log line). Usage: start_server NAME ARGS...
start_server() {
  local name="$1"; shift
  local log="$work/$name.log"
  "$bin/$name" --bind 127.0.0.1:0 "$@" 2>"$log" &
  pids+=($!)
  addr=""
  for _ in $(seq 1 100); do
    addr="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)"
    [ -n "$addr" ] && return
    sleep 0.1
  done
  echo "$name did not start:" >&2
  cat "$log" >&2
  exit 1
}

# A gateway file with one `Path=/**` route: one_route_gateway GATEWAY_PORT UPSTREAM_PORT
one_route_gateway() {
  cat <<CONF
server:
  bind: 127.0.0.1:$1
routes:
  - id: bench
    uri: http://127.0.0.1:$2
    predicates:
      - Path=/**
CONF
}

# Starts nginx as the gateway benchmarks' reverse proxy (one worker per core, `reuseport`,
# upstream keepalive 128, X-Forwarded-For/-Proto set): start_nginx_proxy PORT UPSTREAM_PORT
# ACCESS_LOG TLS. ACCESS_LOG `on` writes a combined line per request to
# $work/nginx-access.log, buffered (64 KiB, flushed every second); TLS `on` terminates TLS
# with $work/cert.pem and $work/key.pem. Its pid is in $work/nginx.pid.
start_nginx_proxy() {
  local port="$1" upstream="$2" access_log="$3" tls="$4" listen log
  local nginx_bin
  nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  listen="listen 127.0.0.1:$port reuseport;"
  if [ "$tls" = on ]; then
    listen="listen 127.0.0.1:$port ssl reuseport;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;"
  fi
  log="access_log off;"
  if [ "$access_log" = on ]; then
    log="access_log $work/nginx-access.log combined buffer=64k flush=1s;"
  fi
  cat > "$work/nginx.conf" <<CONF
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  $log
  upstream backend { server 127.0.0.1:$upstream; keepalive 128; }
  server {
    $listen
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
  "$nginx_bin" -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
}

# Stops the nginx start_nginx_proxy started (its workers with it).
nginx_proxy_stop() { kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true; }

# Starts an etcd cluster of N members on free loopback ports with data in $work; sets
# $etcd_endpoints to its client endpoints (host:port,...). Usage: start_etcd_cluster 3
start_etcd_cluster() {
  local size="$1" n clients=() peers=() initial=""
  for n in $(seq 1 "$size"); do
    clients+=("$(free_port)"); peers+=("$(free_port)")
    initial="${initial:+$initial,}m$n=http://127.0.0.1:${peers[$((n-1))]}"
  done
  for n in $(seq 1 "$size"); do
    etcd --name "m$n" --data-dir "$work/etcd-m$n" \
      --listen-client-urls "http://127.0.0.1:${clients[$((n-1))]}" \
      --advertise-client-urls "http://127.0.0.1:${clients[$((n-1))]}" \
      --listen-peer-urls "http://127.0.0.1:${peers[$((n-1))]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peers[$((n-1))]}" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "bench-$$" --log-level warn >"$work/etcd-m$n.log" 2>&1 &
    pids+=($!)
  done
  for n in $(seq 1 "$size"); do wait_port "${clients[$((n-1))]}"; done
  sleep 1
  etcd_endpoints=""
  for n in $(seq 1 "$size"); do
    etcd_endpoints="${etcd_endpoints:+$etcd_endpoints,}127.0.0.1:${clients[$((n-1))]}"
  done
}

machine() { echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"; }
