#!/usr/bin/env bash
# What telemetry costs: throughput and gateway CPU per request of the demo's
# summary route (4 upstream calls) with telemetry as shipped (Prometheus
# metrics, dashboard statistics, W3C trace context; OTLP export and access
# log off, their defaults) against the same config with
# `telemetry: { metrics: false, tracing: false }`, in one run. The two
# gateways alternate, RUNS times each, so both see the same machine; the
# ratios are medians of per-round ratios.
#
# Processes: demo upstreams at 0 ms latency on free ports (CPU 1), the
# gateway under test (CPU 0), the load generator `switchyard-bench` (CPU 1).
# Everything stays on loopback; every phase is bounded in requests and time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
RUNS="${RUNS:-5}"
REQUESTS="${REQUESTS:-20000}"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-telemetry.XXXXXX")"
UP_PID="" GW_PID=""

WORK="$LOGS"
# shellcheck source=bench/lib.sh
source bench/lib.sh # stop, fail
cleanup() { stop "$GW_PID" "$UP_PID"; GW_PID="" UP_PID=""; }
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# wait_for FILE PATTERN PID: the first line of FILE matching PATTERN (10 s).
wait_for() {
    for _ in $(seq 100); do
        kill -0 "$3" 2>/dev/null || fail "process $3 exited while starting"
        local line
        line="$(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -m1 -E "$2" || true)"
        [[ -n "$line" ]] && { echo "$line"; return 0; }
        sleep 0.1
    done
    fail "no '$2' in $1 after 10 s"
}

if command -v taskset >/dev/null && [[ "$(nproc --all 2>/dev/null || echo 1)" -ge 2 ]]; then
    PIN_GW=(taskset -c 0) PIN_REST=(taskset -c 1)
else
    PIN_GW=() PIN_REST=()
fi

echo "== building release binaries"
cargo build --release --bins --quiet
"${PIN_REST[@]}" "$BIN/switchyard" demo --upstreams-only --latency 0ms --base-port 0 \
    >"$LOGS/upstreams.log" 2>&1 &
UP_PID=$!
services="$(wait_for "$LOGS/upstreams.log" '^demo services:' "$UP_PID")"
port_of() { sed -E "s/.*$1 http:\/\/127\.0\.0\.1:([0-9]+).*/\1/" <<<"$services"; }

# Both configs: the shop with the upstreams' real ports and free gateway ports.
sed -e "s/127.0.0.1:9101/127.0.0.1:$(port_of customers)/" \
    -e "s/127.0.0.1:9102/127.0.0.1:$(port_of orders)/" \
    -e "s/127.0.0.1:9103/127.0.0.1:$(port_of shipping)/" \
    -e "s/127.0.0.1:9104/127.0.0.1:$(port_of products)/" \
    -e "s/listen: 127.0.0.1:8080/listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0/" \
    examples/shop.yaml >"$LOGS/on.yaml"
# ON_TELEMETRY (e.g. '{ tracing: false }') measures a part of telemetry alone.
if [[ -n "${ON_TELEMETRY:-}" ]]; then printf '\ntelemetry: %s\n' "$ON_TELEMETRY" >>"$LOGS/on.yaml"; fi
{ sed '/^telemetry:/d' "$LOGS/on.yaml"; printf '\ntelemetry: { metrics: false, tracing: false }\n'; } >"$LOGS/off.yaml"

# bench MODE: one measured phase against a fresh gateway with MODE's config.
bench() {
    "${PIN_GW[@]}" "$BIN/switchyard" run --config "$LOGS/$1.yaml" >"$LOGS/gw-$1.log" 2>&1 &
    GW_PID=$!
    local addr
    addr="$(wait_for "$LOGS/gw-$1.log" 'switchyard listening' "$GW_PID" | sed -E 's/.* addr=([0-9.:]+).*/\1/')"
    "${PIN_REST[@]}" "$BIN/switchyard-bench" --url "http://$addr" --gateway-pid "$GW_PID" \
        --path-template '/customers/{id}/summary' --concurrency 32 --warmup 1000 \
        --requests "$REQUESTS" --runs 1 --time-limit 60s --timeout 5s | grep -m1 '^run 1 '
    stop "$GW_PID"
    GW_PID=""
}

echo "== summary route, 0 ms upstreams, concurrency 32, $REQUESTS requests per phase, $RUNS rounds"
for round in $(seq "$RUNS"); do
    for mode in on off; do
        line="$(bench "$mode")"
        echo "round $round telemetry $mode: ${line#run 1 }"
        rps="$(sed -E 's/.*: ([0-9]+) req\/s.*/\1/' <<<"$line")"
        cpu="$(sed -E 's/.*gateway CPU ([0-9.]+) µs\/req.*/\1/' <<<"$line")"
        echo "$round $mode $rps $cpu" >>"$LOGS/figures"
    done
done

awk '
    { rps[$1, $2] = $3; cpu[$1, $2] = $4; if ($1 > n) n = $1 }
    function median(a, k,   i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    END {
        for (r = 1; r <= n; r++) { t[r] = rps[r, "on"] / rps[r, "off"]; c[r] = cpu[r, "on"] / cpu[r, "off"] }
        tr = median(t, n); cr = median(c, n)
        printf "\nthroughput on/off: %.3f (median of %d rounds) -> overhead %.1f %%\n", tr, n, (1 - tr) * 100
        printf "gateway CPU per request on/off: %.3f -> overhead %.1f %%\n", cr, (cr - 1) * 100
    }' "$LOGS/figures"
echo "logs in $LOGS"
