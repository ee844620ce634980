#!/usr/bin/env bash
# The benchmark suite of issue 7: Switchyard side by side with nginx
# (pass-through), a Node.js/Express aggregator (the summary route) and a
# minimal hyper server (cache hits), plus how Switchyard's cost grows with
# calls and body size, and memory. One command: installs what is missing,
# builds, runs everything on loopback with bounded phases, stops every
# process it started, prints a markdown table and writes
# bench/results/<UTC timestamp>.json. See bench/README.md.
#
#   RUNS=3        runs per measurement; the report shows medians
#   QUICK=1       1 run, 1 s phases: a smoke test of the harness
#   ONLY=a,b      scenarios: passthrough,summary,cache,scaling,memory
#   PHASE=3s      length of a measured phase (WARMUP before each: 1s)
#   CONNECTIONS=10000, SUMMARY_RATE=200, PASSTHROUGH_RATE=<60% of max>
#   OPEN_LOOP=0   skip the open-loop (oha) phases, e.g. where oha cannot be built
#   REFERENCE=1   also make this run the committed reference
#                 (bench/results/reference.json and bench/results.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ "$BIN" = /* ]] || BIN="$ROOT/$BIN"
SUITE="$BIN/switchyard-suite"
if [[ -n "${QUICK:-}" ]]; then
    RUNS=1 PHASE="${PHASE:-1s}" WARMUP="${WARMUP:-1s}"
else
    RUNS="${RUNS:-3}" PHASE="${PHASE:-3s}" WARMUP="${WARMUP:-1s}"
fi
ONLY="${ONLY:-passthrough,summary,cache,scaling,memory}"
OPEN_LOOP="${OPEN_LOOP:-1}"
# Phases that must finish slow requests (1 MiB bodies) last at least 3 s.
LONG_PHASE="$PHASE"
[[ "${PHASE%s}" =~ ^[0-9]+$ && "${PHASE%s}" -ge 3 ]] || LONG_PHASE=3s

source "$ROOT/bench/lib.sh"
source "$ROOT/bench/install.sh"
source "$ROOT/bench/stack.sh"
source "$ROOT/bench/scenarios.sh"

finish() {
    local rc=$?
    cleanup
    [[ $rc -ne 0 || -n "${KEEP_WORK:-}" || -n "${KEEP:-}" ]] || rm -rf "$WORK"
    exit "$rc"
}
trap finish EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

for s in ${ONLY//,/ }; do
    declare -F "scenario_$s" >/dev/null || fail "unknown scenario $s (ONLY=passthrough,summary,cache,scaling,memory)"
done

install_tools
echo "== building release binaries"
cargo build --release --quiet --bin switchyard --bin switchyard-cache-bench --bin switchyard-suite
for b in switchyard switchyard-cache-bench switchyard-suite; do
    [[ -x "$BIN/$b" ]] || fail "no $BIN/$b (set CARGO_TARGET_DIR?)"
done

# 10,000 held connections need that many descriptors in the client and in
# each server; the script's limit is inherited by all of them.
ulimit -n "$(ulimit -Hn | sed 's/unlimited/65536/' | awk '{print ($1 > 65536) ? 65536 : $1}')"
require_free "${ALL_ADDRS[@]}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RECORDS="$WORK/records.jsonl"
: >"$RECORDS"
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "switchyard=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "machine=$(nproc --all) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "placement=$PLACEMENT; nginx has worker_processes 1, Node is single-threaded"
    echo "runs=$RUNS, phases of $PHASE after $WARMUP warm-up; scenarios $ONLY"
    echo "open-file limit=$(ulimit -n)"
    versions
} >"$WORK/meta.txt"
echo "placement: $PLACEMENT; work dir $WORK"

for s in ${ONLY//,/ }; do "scenario_$s"; done

mkdir -p "$ROOT/bench/results"
echo
echo "== results"
RESULT="$ROOT/bench/results/$STAMP.json"
"$SUITE" report --records "$RECORDS" --meta "$WORK/meta.txt" --json "$RESULT" | tee "$WORK/report.md"
if [[ -n "${REFERENCE:-}" ]]; then
    cp "$RESULT" "$ROOT/bench/results/reference.json"
    {
        echo "# Benchmark reference run"
        echo
        echo "Written by \`REFERENCE=1 bench/run.sh\` (see [README.md](README.md)); the raw"
        echo "figures are in [\`results/reference.json\`](results/reference.json)."
        echo
        grep -v '^results: ' "$WORK/report.md"
    } >"$ROOT/bench/results.md"
    echo "reference updated: bench/results/reference.json, bench/results.md"
fi
