#!/usr/bin/env bash
# Benchmarks rate limiting (issue 4), in release mode, on loopback only:
#
# 1. micro: decisions per second in-process (store alone; Limiter::check with
#    key extraction and headers, 1 and 2 threads) and through a private
#    redis-server (1, 16, 64 decisions in flight on one multiplexed
#    connection), and resident memory for 1,000,000 distinct keys;
# 2. gateway: the same one-call aggregation route limited (in-process, and
#    Redis) and unlimited, measured back to back in every run by
#    switchyard-bench, as ratios of req/s and of gateway CPU per request.
#
# Every port is a free one picked at start (never 8080 or 9101-9104); every
# loop is bounded in requests and time. Medians of RUNS (default 3) runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
RUNS="${RUNS:-3}"
REQUESTS="${REQUESTS:-20000}"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-ratelimit-bench.XXXXXX")"
WORK="$LOGS"
# shellcheck source=bench/lib.sh
source bench/lib.sh # PIDS, cleanup, fail
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# free_port: a port nothing listens on (bound and released by the kernel).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# wait_port PORT PID: up to 10 s for PORT to accept, failing if PID dies.
wait_port() {
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || fail "process $2 exited while starting (logs in $LOGS)"
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    fail "port $1 not listening after 10 s"
}

if command -v taskset >/dev/null && [[ "$(nproc --all 2>/dev/null || echo 1)" -ge 2 ]]; then
    PIN_A=(taskset -c 0) PIN_B=(taskset -c 1)
    PLACEMENT="measured process on CPU 0; redis, upstream and load generator on CPU 1 (taskset)"
else
    PIN_A=() PIN_B=()
    PLACEMENT="unpinned (taskset missing or fewer than 2 CPUs)"
fi
command -v redis-server >/dev/null || fail "redis-server is needed (apt-get install redis-server)"

echo "== building release binaries"
cargo build --release --bins --quiet
echo "placement: $PLACEMENT"
echo "machine: $(nproc --all 2>/dev/null || echo '?') CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $LOGS"

REDIS_PORT="$(free_port)"
"${PIN_B[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$LOGS/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" "${PIDS[-1]}"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

echo
echo "== micro-benchmarks ($RUNS runs)"
"${PIN_A[@]}" "$BIN/switchyard-ratelimit-bench" micro --runs "$RUNS" --redis "$REDIS_URL"

echo
echo "== gateway: one-call route limited vs unlimited, concurrency 32, $REQUESTS requests per path, $RUNS runs"
UP_PORT="$(free_port)" GW_PORT="$(free_port)" ADMIN_PORT="$(free_port)"
"${PIN_B[@]}" "$BIN/switchyard-ratelimit-bench" upstream --listen "127.0.0.1:$UP_PORT" \
    >"$LOGS/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "${PIDS[-1]}"
CONFIG="$LOGS/gateway.yaml"
cat >"$CONFIG" <<EOF
server: { listen: "127.0.0.1:$GW_PORT", admin_listen: "127.0.0.1:$ADMIN_PORT" }
upstreams: { items: { url: "http://127.0.0.1:$UP_PORT", timeout: 2s } }
redis: { url: "$REDIS_URL", timeout: 1s }
rate_limits:
  # Real decisions that always admit: the cost of limiting, not of 429s.
  bench_memory: { key: ["header:x-api-key", client_ip], rate: 1000000000/1s }
  bench_redis: { key: ["header:x-api-key", client_ip], rate: 1000000000/1s, store: redis }
routes:
  - get: /unlimited/{id}
    calls: { thing: { get: "items:/items/{path.id}" } }
  - get: /limited/{id}
    rate_limit: bench_memory
    calls: { thing: { get: "items:/items/{path.id}" } }
  - get: /redis-limited/{id}
    rate_limit: bench_redis
    calls: { thing: { get: "items:/items/{path.id}" } }
EOF
"${PIN_A[@]}" "$BIN/switchyard" run --config "$CONFIG" >"$LOGS/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_port "$GW_PORT" "$GW_PID"

# compare PATH: PATH against /unlimited/{id} in the same runs; prints the
# load generator's lines and the median ratios.
compare() {
    local out="$LOGS/compare-${1//\//_}.txt"
    "${PIN_B[@]}" "$BIN/switchyard-bench" --url "http://127.0.0.1:$GW_PORT" --runs "$RUNS" \
        --gateway-pid "$GW_PID" --path-template "$1" --baseline '/unlimited/{id}' \
        --concurrency 32 --warmup 1000 --requests "$REQUESTS" --time-limit 60s --timeout 5s \
        | tee "$out"
    # Per-run req/s ratio (path / baseline), median over runs.
    awk -v path="$1" '
        $1 == "run" { sub(":", "", $3); rps = $4 + 0
                      if ($3 == path) a[$2] = rps; else b[$2] = rps }
        END { n = 0; for (r in a) if (b[r] > 0) v[++n] = a[r] / b[r]
              for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              if (n) printf "  req/s ratio %s / /unlimited/{id}: %.3f (median of per-run ratios)\n", path, v[int((n + 1) / 2)] }
    ' "$out"
}
compare '/limited/{id}'
echo
compare '/redis-limited/{id}'
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine moves every figure)"
