# The five scenarios of issue 7 (sourced by bench/run.sh). Each starts what
# it needs, measures RUNS times (the systems taking turns within each run, so
# they see the same machine), appends to $RECORDS and stops its processes.

# known_args PID: `--known P` for every bench process but PID, so their CPU is
# not taken for other activity on the machine.
known_args() {
    local p
    KNOWN=()
    for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || KNOWN+=(--known "$p"); done
}

# closed SCENARIO CASE SYSTEM RUN X PID URL [CONNECTIONS [PHASE]]: wrk,
# closed loop (max throughput), after an unrecorded warm-up.
closed() {
    local s=$1 c=$2 sys=$3 run=$4 x=$5 pid=$6 url=$7 conns=${8:-64} phase=${9:-$PHASE}
    $PIN_REST "$WRK" -t1 -c"$conns" -d"$WARMUP" "$url" >/dev/null
    known_args "$pid"
    $PIN_REST "$SUITE" measure --scenario "$s" --case "$c" --system "$sys" --run "$run" ${x:+--x "$x"} \
        --pid "$pid" "${KNOWN[@]}" --tool wrk --out "$RECORDS" -- \
        "$WRK" -t1 -c"$conns" -d"$phase" --timeout 5s -s "$ROOT/bench/wrk-report.lua" "$url" || fail "load phase failed"
}

# oha's flags that differ between versions: JSON output (`--output-format
# json` in recent ones, `--json` before), and letting requests in flight at
# the deadline finish instead of counting them as errors.
oha_flags() {
    local help
    help="$("$OHA" --help 2>/dev/null)"
    if grep -q -- '--output-format' <<<"$help"; then echo "--output-format json"; else echo "--json"; fi
    ! grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$help" || echo "--wait-ongoing-requests-after-deadline"
}

# open SCENARIO CASE SYSTEM RUN RATE PID URL: oha at a fixed arrival rate;
# --latency-correction counts each request from when it was due, not when it
# was sent, so a stall is not hidden (no coordinated omission).
open() {
    local s=$1 c=$2 sys=$3 run=$4 rate=$5 pid=$6 url=$7
    [[ "$OPEN_LOOP" != 0 ]] || return 0
    $PIN_REST "$OHA" -z "$WARMUP" -q "$rate" -c 64 --no-tui "$url" >/dev/null
    known_args "$pid"
    $PIN_REST "$SUITE" measure --scenario "$s" --case "$c" --system "$sys" --run "$run" --x "$rate" \
        --pid "$pid" "${KNOWN[@]}" --tool oha --out "$RECORDS" -- \
        "$OHA" -z "$PHASE" -q "$rate" --latency-correction -c 64 --no-tui $(oha_flags) "$url" ||
        fail "load phase failed"
}

teardown() { cleanup; }

scenario_passthrough() {
    echo "== (1) pass-through: GET /catalog/7, Switchyard vs nginx, same upstream (demo products, 0 ms)"
    start_upstreams 0ms
    start_gateway "$(main_config)" /catalog/7
    start_nginx
    local run rate
    for run in $(seq "$RUNS"); do
        closed passthrough closed switchyard "$run" "" "$GW_PID" "http://$GW/catalog/7"
        closed passthrough closed nginx "$run" "" "$NGINX_PID" "http://$NGINX_ADDR/catalog/7"
    done
    [[ "$OPEN_LOOP" != 0 ]] || { echo "   open loop skipped (OPEN_LOOP=0)"; teardown; return; }
    rate="${PASSTHROUGH_RATE:-$("$SUITE" rate --records "$RECORDS" --scenario passthrough --systems switchyard,nginx --fraction 0.6)}"
    echo "   open loop at $rate req/s (60% of the slower one's closed-loop median)"
    for run in $(seq "$RUNS"); do
        open passthrough open switchyard "$run" "$rate" "$GW_PID" "http://$GW/catalog/7"
        open passthrough open nginx "$run" "$rate" "$NGINX_PID" "http://$NGINX_ADDR/catalog/7"
    done
    teardown
}

# same_summaries: Switchyard and Express must answer the same JSON (key
# order aside), or the comparison means nothing.
same_summaries() {
    local id a b
    for id in 1 2 3 $ID 77 500; do
        a="$(curl -fsS "http://$GW/customers/$id/summary" | jq -S .)" || fail "Switchyard: no summary for customer $id"
        b="$(curl -fsS "http://$EXPRESS_ADDR/customers/$id/summary" | jq -S .)" || fail "Express: no summary for customer $id"
        if [[ "$a" != "$b" ]]; then
            diff <(echo "$a") <(echo "$b") | head -n 20 >&2 || true
            fail "Switchyard and the Express peer answer customer $id's summary differently: not comparable"
        fi
    done
    echo "   same answers from both for customers 1 2 3 $ID 77 500"
}

scenario_summary() {
    local run path="/customers/$ID/summary" rate="${SUMMARY_RATE:-200}"
    echo "== (2) summary route $path (3 parallel calls + 1 dependent), Switchyard vs Express"
    echo "   upstreams at 0 ms: closed loop"
    start_upstreams 0ms
    start_gateway "$(main_config)" "$path"
    start_express
    same_summaries
    for run in $(seq "$RUNS"); do
        closed summary closed switchyard "$run" "" "$GW_PID" "http://$GW$path"
        closed summary closed express "$run" "" "$EXPRESS_PID" "http://$EXPRESS_ADDR$path"
    done
    teardown
    [[ "$OPEN_LOOP" != 0 ]] || { echo "   open loop at 20 ms skipped (OPEN_LOOP=0)"; return; }
    echo "   upstreams at 20 ms: open loop at $rate req/s; probe = the orders service called directly"
    start_upstreams 20ms
    start_gateway "$(main_config)" "$path"
    start_express
    for run in $(seq "$RUNS"); do
        open summary open probe "$run" "$rate" "$UP_PID" "http://127.0.0.1:18102/orders?customer_id=$ID"
        open summary open switchyard "$run" "$rate" "$GW_PID" "http://$GW$path"
        open summary open express "$run" "$rate" "$EXPRESS_PID" "http://$EXPRESS_ADDR$path"
    done
    teardown
}

scenario_cache() {
    local run path="/cached/customers/$ID/summary"
    echo "== (3) cache hit: $path (route-level cache) vs a minimal hyper server with the same bytes"
    start_upstreams 0ms
    start_gateway "$(main_config)" "$path"
    curl -fsS -o "$WORK/cached.json" "http://$GW$path" || fail "cannot fetch $path"
    start_bytes floor "$FLOOR_ADDR" "$WORK/cached.json" "$PIN_SERVER"
    local floor_pid=$SPAWNED
    echo "   body $(wc -c <"$WORK/cached.json") bytes"
    for run in $(seq "$RUNS"); do
        closed cache closed switchyard "$run" "" "$GW_PID" "http://$GW$path"
        closed cache closed floor "$run" "" "$floor_pid" "http://$FLOOR_ADDR/"
    done
    teardown
}

scenario_scaling() {
    echo "== (4) scaling (Switchyard alone): ${FANOUTS[*]} parallel calls per route; bodies of ${SIZES[*]} bytes"
    echo '{"ok":true,"n":1}' >"$WORK/fast.json"
    start_bytes fast "$FAST_ADDR" "$WORK/fast.json" "$PIN_REST"
    local i run n
    for i in "${!SIZES[@]}"; do
        json_of_size $((SIZES[i] / 2)) >"$WORK/half-${SIZES[$i]}.json"
        start_bytes "size${SIZES[$i]}" "127.0.0.1:$((SIZE_BASE + i))" "$WORK/half-${SIZES[$i]}.json" "$PIN_REST"
    done
    start_gateway "$(scaling_config)" /fan/1
    for n in "${SIZES[@]}"; do
        echo "   /body/$n answers $(curl -fsS "http://$GW/body/$n" | wc -c) bytes"
    done
    for run in $(seq "$RUNS"); do
        for n in "${FANOUTS[@]}"; do closed scaling calls switchyard "$run" "$n" "$GW_PID" "http://$GW/fan/$n" 16; done
        # Few connections and at least 3 s: a 1 MiB composition takes tens
        # of milliseconds, and every phase must finish some requests.
        for n in "${SIZES[@]}"; do
            closed scaling body switchyard "$run" "$n" "$GW_PID" "http://$GW/body/$n" 4 "$LONG_PHASE"
        done
    done
    teardown
}

# memory_of SYSTEM RUN CASE PID [URL CONNECTIONS]
memory_of() {
    $PIN_REST "$SUITE" memory --scenario memory --case "$3" --system "$1" --run "$2" --pid "$4" \
        ${5:+--url "$5" --connections "$6"} --out "$RECORDS" || fail "memory measurement failed"
}

scenario_memory() {
    local run conns="${CONNECTIONS:-10000}"
    echo "== (5) memory (RSS, all processes): idle, after load, with $conns idle keep-alive connections"
    start_upstreams 0ms
    for run in $(seq "$RUNS"); do
        # Fresh servers each run, so "idle" is idle after start.
        start_gateway "$(main_config)" /catalog/7
        start_nginx
        sleep 1
        memory_of switchyard "$run" idle "$GW_PID"
        memory_of nginx "$run" idle "$NGINX_PID"
        # Peak under load: the gateway's is under the summary route.
        closed memory load switchyard "$run" "" "$GW_PID" "http://$GW/customers/$ID/summary"
        closed memory load nginx "$run" "" "$NGINX_PID" "http://$NGINX_ADDR/catalog/7"
        memory_of switchyard "$run" load "$GW_PID"
        memory_of nginx "$run" load "$NGINX_PID"
        memory_of switchyard "$run" connections "$GW_PID" "http://$GW/catalog/7" "$conns"
        memory_of nginx "$run" connections "$NGINX_PID" "http://$NGINX_ADDR/catalog/7" "$conns"
        forget "$GW_PID" "$NGINX_PID"
    done
    teardown
}
