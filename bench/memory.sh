#!/usr/bin/env bash
# Gateway memory (issue 7): idle RSS, peak RSS under load on the summary
# route, and RSS with N idle keep-alive connections (each having made one
# request) next to nginx 1.22 (worker_processes 1, upstream keepalive) in
# front of the same demo products service, measured in the same run.
#
#   bench/memory.sh              # N=10000 CONNS_PATH=/catalog/7
#
# Ports: upstreams 28100-28103, gateway 28080 (admin 28090), nginx 28081.
# Everything is loopback and bounded; every process is stopped at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
N="${N:-10000}"
CONNS_PATH="${CONNS_PATH:-/catalog/7}"
NGINX="${NGINX:-/usr/sbin/nginx}"
LOAD_REQUESTS="${LOAD_REQUESTS:-20000}"
LOAD_CONCURRENCY="${LOAD_CONCURRENCY:-64}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-mem.XXXXXX")"
UP_PID="" GW_PID="" NG_PID=""

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

stop() {
    local pid
    for pid in "$@"; do [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        [[ -n "$pid" ]] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() { stop "$NG_PID" "$GW_PID" "$UP_PID"; NG_PID="" GW_PID="" UP_PID=""; }
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM
fail() { echo "error: $*" >&2; tail -n 20 "$TMP"/*.log >&2 || true; exit 1; }

ready() { # ready HOST:PORT PATH PID
    for _ in $(seq 100); do
        kill -0 "$3" 2>/dev/null || fail "process $3 exited while starting"
        if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}" &&
            printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3 &&
            IFS= read -r -t 1 status <&3 && [[ "$status" == *" 200 "* ]]) 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    fail "$1$2 not ready after 10 s"
}
field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # field PID VmRSS → kB

cat >"$TMP/gateway.yaml" <<EOF
server:
  listen: 127.0.0.1:28080
  admin_listen: 127.0.0.1:28090
  max_connections: $((N + 1000))
  # Long enough that no held connection is closed as idle while measuring.
  header_read_timeout: 120s
telemetry:
  access_log: { to: off }
upstreams:
  customers: { url: "http://127.0.0.1:28100", timeout: 300ms }
  orders:    { url: "http://127.0.0.1:28101", timeout: 300ms }
  shipping:  { url: "http://127.0.0.1:28102", timeout: 300ms }
  products:  { url: "http://127.0.0.1:28103", timeout: 300ms }
routes:
  - get: /customers/{id}/summary
    timeout: 1s
    calls:
      customer: { get: "customers:/customers/{path.id}" }
      orders:   { get: "orders:/orders?customer_id={path.id}" }
      shipping: { get: "shipping:/shipments?customer_id={path.id}", optional: true }
      products: { get: "products:/products?ids={orders.body[*].product_id|distinct|join}" }
    respond:
      customer: customer.body
      orders: orders.body
      shipping: shipping.body
      products: products.body
      missing: \$errors
  - get: /catalog/{*rest}
    proxy: "products:/products/{path.rest}"
EOF

mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections $((N + 1000)); }
http {
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream products { server 127.0.0.1:28103; keepalive 64; }
    server {
        listen 127.0.0.1:28081;
        location /catalog/ {
            proxy_pass http://products/products/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF

"$BIN/switchyard" demo --upstreams-only --latency 0ms --base-port 28100 >"$TMP/upstreams.log" 2>&1 &
UP_PID=$!
for port in 28100 28101 28102 28103; do ready "127.0.0.1:$port" /healthz "$UP_PID"; done

"$BIN/switchyard" run --config "$TMP/gateway.yaml" --no-watch >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
ready 127.0.0.1:28090 /readyz "$GW_PID"
sleep 1
echo "gateway idle (started, no request): VmRSS $(field "$GW_PID" VmRSS) kB, threads $(field "$GW_PID" Threads)"
ready 127.0.0.1:28080 /catalog/7 "$GW_PID"
ready 127.0.0.1:28080 /customers/1/summary "$GW_PID"
sleep 1
echo "gateway idle (after 2 requests): VmRSS $(field "$GW_PID" VmRSS) kB"

"$BIN/switchyard-bench" --url http://127.0.0.1:28080 --requests "$LOAD_REQUESTS" \
    --concurrency "$LOAD_CONCURRENCY" --warmup 500 --runs 1 --time-limit 60s >"$TMP/load.log" 2>&1 ||
    fail "load run failed"
echo "gateway under load (summary, concurrency $LOAD_CONCURRENCY, $LOAD_REQUESTS req): peak VmHWM $(field "$GW_PID" VmHWM) kB, after VmRSS $(field "$GW_PID" VmRSS) kB"
grep -m1 '^run 1' "$TMP/load.log" | sed 's/^/  /' || true

echo "gateway, $N idle connections on $CONNS_PATH:"
python3 bench/conns.py --port 28080 --path "$CONNS_PATH" -n "$N" --pids "$GW_PID" | sed 's/^/  /'
echo "  after: VmRSS $(field "$GW_PID" VmRSS) kB, VmHWM $(field "$GW_PID" VmHWM) kB"

"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx.log" 2>&1 &
NG_PID=$!
ready 127.0.0.1:28081 /catalog/7 "$NG_PID"
NG_PIDS="$NG_PID,$(pgrep -P "$NG_PID" | paste -sd,)"
echo "nginx (master+worker $NG_PIDS), $N idle connections on $CONNS_PATH:"
python3 bench/conns.py --port 28081 --path "$CONNS_PATH" -n "$N" --pids "$NG_PIDS" | sed 's/^/  /'
