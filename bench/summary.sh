#!/usr/bin/env bash
# Benchmarks the demo's summary route (GET /customers/{id}/summary) end to end:
# gateway overhead and latency at 20 ms upstream latency, gateway CPU per request
# at 0 ms (with the /catalog/7 proxy route as a baseline). See bench/README.md.
#
# Processes: the demo upstreams (`switchyard demo --upstreams-only`, ports
# 9101-9104) and the gateway (`switchyard run --config examples/shop.yaml`,
# 127.0.0.1:8080, admin 127.0.0.1:9901) each in their own process, driven by
# `switchyard-bench`.
# All traffic stays on loopback; every phase is bounded in requests and time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
CONFIG=examples/shop.yaml
GATEWAY=127.0.0.1:8080
RUNS="${RUNS:-3}"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")"
UP_PID="" GW_PID="" BENCH_PID=""

WORK="$LOGS"
# shellcheck source=bench/lib.sh
source bench/lib.sh # stop, fail, listening
cleanup() { stop "$BENCH_PID" "$GW_PID" "$UP_PID"; BENCH_PID="" UP_PID="" GW_PID=""; }
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# ready URL PID: poll (at most 10 s) until URL answers 200, failing if PID dies.
ready() {
    local host="${1#http://}" path="/${1#http://*/}"
    host="${host%%/*}"
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || fail "process $2 exited while starting (logs in $LOGS)"
        if (exec 3<>"/dev/tcp/${host%:*}/${host#*:}" &&
            printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3 &&
            IFS= read -r -t 1 status <&3 && [[ "$status" == *" 200 "* ]]) 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    fail "$1 not ready after 10 s (logs in $LOGS)"
}

# Placement: gateway alone on CPU 0; upstreams and load generator on CPU 1.
if command -v taskset >/dev/null && [[ "$(nproc --all 2>/dev/null || echo 1)" -ge 2 ]]; then
    PIN_GW=(taskset -c 0) PIN_REST=(taskset -c 1)
    PLACEMENT="gateway on CPU 0; upstreams and load generator on CPU 1 (taskset)"
else
    PIN_GW=() PIN_REST=()
    PLACEMENT="unpinned (taskset missing or fewer than 2 CPUs): figures share all cores"
fi

# start LATENCY: the upstreams with that latency, then the gateway.
start() {
    "${PIN_REST[@]}" "$BIN/switchyard" demo --upstreams-only --latency "$1" \
        >"$LOGS/upstreams-$1.log" 2>&1 &
    UP_PID=$!
    for port in 9101 9102 9103 9104; do ready "http://127.0.0.1:$port/healthz" "$UP_PID"; done
    "${PIN_GW[@]}" "$BIN/switchyard" run --config "$CONFIG" >"$LOGS/gateway-$1.log" 2>&1 &
    GW_PID=$!
    ready "http://$GATEWAY/catalog/7" "$GW_PID"
    ready "http://$GATEWAY/customers/1/summary" "$GW_PID"
}

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

echo "== building release binaries"
cargo build --release --bins --quiet
[[ -x "$BIN/switchyard" && -x "$BIN/switchyard-bench" ]] || fail "no binaries in $BIN (set CARGO_TARGET_DIR?)"
# The upstreams, the gateway and its admin listener (default 127.0.0.1:9901).
for addr in 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103 127.0.0.1:9104 "$GATEWAY" 127.0.0.1:9901; do
    ! listening "$addr" || fail "$addr is already in use; stop whatever listens there first"
done
echo "placement: $PLACEMENT"
echo "machine: $(nproc --all 2>/dev/null || echo '?') CPUs, load average before start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'); logs in $LOGS"
# bench ARGS...: the load generator, in the background so a signal reaches our
# trap at once; its exit status is ours.
bench() {
    "${PIN_REST[@]}" "$BIN/switchyard-bench" --url "http://$GATEWAY" --runs "$RUNS" \
        --gateway-pid "$GW_PID" --upstreams-pid "$UP_PID" --clk-tck "$CLK_TCK" "$@" &
    BENCH_PID=$!
    wait "$BENCH_PID" || fail "switchyard-bench failed (exit $?)"
    BENCH_PID=""
}

echo
echo "== latency: upstream latency 20ms, concurrency 16, 1000 requests after 100 warm-up, $RUNS runs"
echo "   critical path orders -> products = 40 ms; all 4 calls in sequence = 80 ms;"
echo "   probe: GET orders directly (one upstream call as the demo services really deliver it)"
start 20ms
bench --path-template '/customers/{id}/summary' \
    --concurrency 16 --warmup 100 --requests 1000 --time-limit 60s --timeout 5s \
    --critical-path 40ms --sequential 80ms \
    --probe 'http://127.0.0.1:9102/orders?customer_id={id}' --probe-calls 2
cleanup

echo
echo "== CPU: upstream latency 0ms, concurrency 32, 20000 requests (60 s limit) per path, $RUNS runs"
start 0ms
bench --path-template '/customers/{id}/summary' \
    --baseline /catalog/7 --concurrency 32 --warmup 1000 --requests 20000 \
    --time-limit 60s --timeout 5s
cleanup
