#!/usr/bin/env bash
# The cache benchmark: server CPU per request of
#   - the demo's summary route (4 upstream calls) uncached,
#   - the same route fully cached (every request a route-level cache hit),
#   - a minimal hyper server answering with the very same bytes,
# measured in one run (same machine state), medians of $RUNS runs, and the
# ratios cached/uncached and hit/minimal. Target: a hit costs at most 1.5x
# the minimal server's CPU per request.
#
# Ports (loopback only; 8080 and 9101-9104 are left to bench/summary.sh):
# demo upstreams 9201-9204, gateway 8281 (admin 9281), minimal server 8282.
# Placement: the measured servers on CPU 0, upstreams and load on CPU 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
RUNS="${RUNS:-3}"
REQUESTS="${REQUESTS:-60000}"
BASE_PORT=9201
GATEWAY=127.0.0.1:8281
ADMIN=127.0.0.1:9281
MINIMAL=127.0.0.1:8282
ID=42
WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cache-bench.XXXXXX")"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
finish() { local rc=$?; cleanup; [[ $rc -ne 0 || -n "${KEEP:-}" ]] || rm -rf "$WORK"; exit $rc; }
trap finish EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

fail() { echo "error: $*" >&2; for f in "$WORK"/*.log; do [[ -s "$f" ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; echo "(kept $WORK)" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

# fetch URL FILE: GET URL, body into FILE; fails unless 200.
fetch() { curl -fsS -o "$2" "$1"; }

# ready URL PID: poll (at most 10 s) until URL answers 200, failing if PID dies.
ready() {
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || fail "process $2 exited while starting (logs in $WORK)"
        fetch "$1" /dev/null 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$1 not ready after 10 s (logs in $WORK)"
}

if command -v taskset >/dev/null && [[ "$(nproc --all 2>/dev/null || echo 1)" -ge 2 ]]; then
    PIN_SERVER=(taskset -c 0) PIN_REST=(taskset -c 1)
    PLACEMENT="measured servers on CPU 0; upstreams and load generator on CPU 1 (taskset)"
else
    PIN_SERVER=() PIN_REST=()
    PLACEMENT="unpinned (taskset missing or fewer than 2 CPUs)"
fi

echo "== building release binaries"
cargo build --release --bins --quiet
command -v curl >/dev/null || fail "this benchmark needs curl"
for b in switchyard switchyard-cache-bench; do [[ -x "$BIN/$b" ]] || fail "no $BIN/$b (set CARGO_TARGET_DIR?)"; done
for addr in 127.0.0.1:9201 127.0.0.1:9202 127.0.0.1:9203 127.0.0.1:9204 "$GATEWAY" "$ADMIN" "$MINIMAL"; do
    ! listening "$addr" || fail "$addr is already in use"
done
echo "placement: $PLACEMENT; work dir $WORK"

# The demo's summary route twice: as shipped, and with a route-level cache.
cat >"$WORK/gateway.yaml" <<YAML
server: { listen: "$GATEWAY", admin_listen: "$ADMIN" }
cache: { max_bytes: 16MiB }
upstreams:
  customers: { url: "http://127.0.0.1:9201", timeout: 300ms }
  orders:    { url: "http://127.0.0.1:9202", timeout: 300ms }
  shipping:  { url: "http://127.0.0.1:9203", timeout: 300ms }
  products:  { url: "http://127.0.0.1:9204", timeout: 300ms }
routes:
  - get: /customers/{id}/summary
    timeout: 1s
    calls: &summary
      customer: { get: "customers:/customers/{path.id}" }
      orders:   { get: "orders:/orders?customer_id={path.id}" }
      shipping: { get: "shipping:/shipments?customer_id={path.id}", optional: true }
      products: { get: "products:/products?ids={orders.body[*].product_id|distinct|join}" }
    respond: &shape
      customer: customer.body
      orders: orders.body
      shipping: shipping.body
      products: products.body
      missing: \$errors
  - get: /cached/customers/{id}/summary
    timeout: 1s
    cache: 1h
    calls: *summary
    respond: *shape
YAML
"$BIN/switchyard" check --config "$WORK/gateway.yaml" >/dev/null || fail "the benchmark config does not check"

"${PIN_REST[@]}" "$BIN/switchyard" demo --upstreams-only --latency 0ms --base-port "$BASE_PORT" >"$WORK/upstreams.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
for port in 9201 9202 9203 9204; do ready "http://127.0.0.1:$port/healthz" "$UP_PID"; done
"${PIN_SERVER[@]}" "$BIN/switchyard" run --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
ready "http://$GATEWAY/cached/customers/$ID/summary" "$GW_PID"
fetch "http://$GATEWAY/cached/customers/$ID/summary" "$WORK/body.json" || fail "cannot fetch the cached summary"
"${PIN_SERVER[@]}" "$BIN/switchyard-cache-bench" serve-bytes --listen "$MINIMAL" --body "$WORK/body.json" >"$WORK/minimal.log" 2>&1 &
MIN_PID=$!; PIDS+=("$MIN_PID")
ready "http://$MINIMAL/" "$MIN_PID"
echo "body: $(wc -c <"$WORK/body.json") bytes (GET /customers/$ID/summary)"

echo
echo "== server CPU per request: concurrency 32, $REQUESTS requests per target after 1000 warm-up, in 6 alternating blocks per run, $RUNS runs"
"${PIN_REST[@]}" "$BIN/switchyard-cache-bench" load --runs "$RUNS" --requests "$REQUESTS" --blocks 6 --warmup 1000 --concurrency 32 \
    --target "uncached=http://$GATEWAY/customers/$ID/summary@$GW_PID" \
    --target "cached=http://$GATEWAY/cached/customers/$ID/summary@$GW_PID" \
    --target "minimal=http://$MINIMAL/@$MIN_PID" \
    --ratio cached/uncached --ratio cached/minimal
