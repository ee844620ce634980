# The processes of the suite and their configs (sourced by bench/run.sh).
# Every address is on 127.0.0.1, ports 18000-18999:
#   18080 gateway (admin 18090)    18081 nginx       18082 Express
#   18083 the cache-hit floor      18101-18104 the demo upstreams
#   18110 the scaling fan-out upstream, 18111-18113 its body-size upstreams

GW=127.0.0.1:18080
GW_ADMIN=127.0.0.1:18090
NGINX_ADDR=127.0.0.1:18081
EXPRESS_ADDR=127.0.0.1:18082
FLOOR_ADDR=127.0.0.1:18083
UP_BASE=18101
FAST_ADDR=127.0.0.1:18110
SIZE_BASE=18111
ALL_ADDRS=("$GW" "$GW_ADMIN" "$NGINX_ADDR" "$EXPRESS_ADDR" "$FLOOR_ADDR" 127.0.0.1:18101
    127.0.0.1:18102 127.0.0.1:18103 127.0.0.1:18104 "$FAST_ADDR" 127.0.0.1:18111
    127.0.0.1:18112 127.0.0.1:18113)
# The customer every measured summary request asks for (the equality check
# compares several).
ID=42

# The gateway's config: examples/shop.yaml itself, moved to the bench ports,
# with room for 10,000 connections, plus a fully cached copy of the summary
# route for the cache-hit scenario. header_read_timeout (10 s by default) also
# closes keep-alive connections idle that long, which would drop the memory
# scenario's held connections while they are still being opened; nginx keeps
# idle ones 75 s by default, so the bench gives the gateway 120 s.
main_config() {
    local out="$WORK/gateway.yaml"
    {
        echo "cache: { max_bytes: 16MiB }"
        sed -e "s|^  listen: 127.0.0.1:8080$|  listen: $GW\n  admin_listen: $GW_ADMIN\n  max_connections: 20000\n  header_read_timeout: 120s|" \
            -e "s|127.0.0.1:9101|127.0.0.1:18101|g; s|127.0.0.1:9102|127.0.0.1:18102|g" \
            -e "s|127.0.0.1:9103|127.0.0.1:18103|g; s|127.0.0.1:9104|127.0.0.1:18104|g" \
            "$ROOT/examples/shop.yaml"
        cat <<'YAML'
  # bench: the summary route with a route-level cache (every request a hit).
  - get: /cached/customers/{id}/summary
    timeout: 1s
    cache: 1h
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
      missing: $errors
YAML
    } >"$out"
    grep -q "admin_listen: $GW_ADMIN" "$out" || fail "examples/shop.yaml changed shape: cannot move it to the bench ports"
    echo "$out"
}

# json_of_size BYTES: a JSON object of about BYTES bytes (an `items` array).
json_of_size() {
    awk -v want="$1" 'BEGIN {
        s = "{\"items\":["; n = 0
        while (length(s) < want - 80) {
            s = s (n ? "," : "") sprintf("{\"id\":%d,\"name\":\"item-%06d\",\"price_cents\":%d}", n, n, 100 + n % 9000); n++
        }
        print s "]}"
    }'
}

SIZES=(1024 102400 1048576)
FANOUTS=(1 4 16 64)

# The scaling config: /fan/N makes N independent calls to one fast upstream;
# /body/SIZE composes two calls of SIZE/2 each into one body of SIZE.
scaling_config() {
    local out="$WORK/scaling.yaml" n i port
    {
        echo "server: { listen: \"$GW\", admin_listen: \"$GW_ADMIN\" }"
        echo "upstreams:"
        # The fan-out puts up to 64 calls per request in flight: lift the
        # per-upstream bulkhead (1024) so it never rejects.
        echo "  fast: { url: \"http://$FAST_ADDR\", max_in_flight: 100000, pool_idle_per_host: 2048 }"
        for i in "${!SIZES[@]}"; do
            port=$((SIZE_BASE + i))
            echo "  size${SIZES[$i]}: { url: \"http://127.0.0.1:$port\", pool_idle_per_host: 256 }"
        done
        echo "routes:"
        for n in "${FANOUTS[@]}"; do
            echo "  - get: /fan/$n"
            echo "    calls:"
            for ((i = 1; i <= n; i++)); do echo "      c$i: { get: \"fast:/\" }"; done
            echo "    respond:"
            for ((i = 1; i <= n; i++)); do echo "      c$i: c$i.body"; done
        done
        for n in "${SIZES[@]}"; do
            echo "  - get: /body/$n"
            echo "    calls:"
            echo "      a: { get: \"size$n:/a\" }"
            echo "      b: { get: \"size$n:/b\" }"
            echo "    respond: { a: a.body, b: b.body }"
        done
    } >"$out"
    echo "$out"
}

# check_config FILE: the gateway must accept it.
check_config() {
    "$BIN/switchyard" check --config "$1" >"$WORK/check.log" 2>&1 || fail "switchyard check rejects $1"
}

start_upstreams() { # LATENCY
    spawn "upstreams-$1" "$PIN_REST" "$BIN/switchyard" demo --upstreams-only --latency "$1" --base-port "$UP_BASE"
    UP_PID=$SPAWNED
    local port
    for port in 18101 18102 18103 18104; do ready "http://127.0.0.1:$port/healthz" "$UP_PID"; done
}

start_gateway() { # CONFIG READY_PATH
    check_config "$1"
    spawn gateway "$PIN_SERVER" "$BIN/switchyard" run --no-watch --config "$1"
    GW_PID=$SPAWNED
    ready "http://$GW$2" "$GW_PID"
}

start_nginx() {
    local dir="$WORK/nginx"
    mkdir -p "$dir"
    sed -e "s|@PREFIX@|$dir|g; s|@LISTEN@|$NGINX_ADDR|; s|@UPSTREAM@|127.0.0.1:18104|" \
        -e "s|@NOFILE@|$(ulimit -n)|g" \
        "$ROOT/bench/peers/nginx/nginx.conf.template" >"$dir/nginx.conf"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" 2>"$WORK/nginx-check.log" || fail "nginx rejects its config ($WORK/nginx-check.log)"
    spawn nginx "$PIN_SERVER" "$NGINX" -p "$dir" -c "$dir/nginx.conf"
    NGINX_PID=$SPAWNED
    ready "http://$NGINX_ADDR/catalog/7" "$NGINX_PID"
}

start_express() {
    local u=http://127.0.0.1
    spawn express "$PIN_SERVER" env NODE_ENV=production \
        CUSTOMERS_URL=$u:18101 ORDERS_URL=$u:18102 SHIPPING_URL=$u:18103 PRODUCTS_URL=$u:18104 \
        node "$EXPRESS_DIR/server.js" "${EXPRESS_ADDR#*:}"
    EXPRESS_PID=$SPAWNED
    ready "http://$EXPRESS_ADDR/healthz" "$EXPRESS_PID"
}

start_bytes() { # NAME ADDR FILE PIN
    spawn "$1" "$4" "$BIN/switchyard-cache-bench" serve-bytes --listen "$2" --body "$3"
    ready "http://$2/" "$SPAWNED"
}
