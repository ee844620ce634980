# Shared shell helpers of the benchmark scripts: processes, ports, readiness,
# CPU placement. Source it; it expects `set -euo pipefail` and sets WORK.
#
#   spawn NAME PIN CMD...   start CMD in the background (log in $WORK/NAME.log),
#                           remember it for cleanup; its PID is in SPAWNED
#   stop PID...             TERM, wait up to 5 s, then KILL
#   cleanup                 stop everything spawned, newest first
#   ready URL PID           wait (10 s at most) for URL to answer 200
#   require_free ADDR...    fail unless nothing listens on HOST:PORT

WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")}"
PIDS=()
SPAWNED=""

fail() {
    echo "error: $*" >&2
    local f
    for f in "$WORK"/*.log; do
        [[ -s "$f" ]] && { echo "--- $f (last lines)" >&2; tail -n 15 "$f" >&2; }
    done
    echo "(logs kept in $WORK)" >&2
    KEEP_WORK=1
    exit 1
}

# CPU placement: the server under test alone on CPU 0; upstreams and the
# load generator on CPU 1. Without taskset or a second CPU, nothing is pinned
# and the report says so.
if command -v taskset >/dev/null && [[ "$(nproc --all 2>/dev/null || echo 1)" -ge 2 ]]; then
    PIN_SERVER="taskset -c 0"
    PIN_REST="taskset -c 1"
    PLACEMENT="server under test alone on CPU 0; upstreams and load generator on CPU 1 (taskset)"
else
    PIN_SERVER=""
    PIN_REST=""
    PLACEMENT="unpinned (no taskset or fewer than 2 CPUs): all processes share all cores"
fi

# spawn NAME PIN CMD...: PIN is "$PIN_SERVER", "$PIN_REST" or "".
spawn() {
    local name="$1" pin="$2"
    shift 2
    # shellcheck disable=SC2086 # PIN is a command prefix, split on purpose.
    $pin "$@" >"$WORK/$name.log" 2>&1 &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

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

# forget PID...: stop them and drop them from the cleanup list.
forget() {
    stop "$@"
    local keep=() pid gone
    for pid in "${PIDS[@]}"; do
        gone=""
        for g in "$@"; do [[ "$pid" == "$g" ]] && gone=1; done
        [[ -n "$gone" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop "${PIDS[$i]}"; done
    PIDS=()
}

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

require_free() {
    local addr
    for addr in "$@"; do
        ! listening "$addr" || fail "$addr is already in use; stop whatever listens there first"
    done
}

ready() {
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || fail "process $2 exited while starting (for $1)"
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$1 not ready after 10 s"
}
