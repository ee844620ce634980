# What the suite needs, installed when missing (sourced by bench/run.sh):
#   - wrk, nginx, curl, jq, node and npm, taskset: Debian's packages (apt-get);
#   - oha, pinned: the Rust package registry (`cargo install --locked`) into
#     a bench-local root, not the user's cargo bin;
#   - the Express peer's dependencies: `npm ci` from the committed
#     package-lock.json (again only when the lock file changed).

OHA_VERSION=1.16.0
TOOLS_ROOT="${SWITCHYARD_BENCH_TOOLS:-$HOME/.cache/switchyard-bench}"
OHA="$TOOLS_ROOT/bin/oha"
EXPRESS_DIR="$ROOT/bench/peers/express"

install_tools() {
    local need=()
    command -v wrk >/dev/null || need+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
    command -v curl >/dev/null || need+=(curl)
    command -v jq >/dev/null || need+=(jq)
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
    command -v taskset >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        echo "== installing from Debian's packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
    WRK="$(command -v wrk)"

    # Only the open-loop phases (scenarios 1 and 2) use oha.
    if [[ "$OPEN_LOOP" != 0 && ",$ONLY," =~ ,(passthrough|summary), ]] && ! "$OHA" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
        echo "== installing oha $OHA_VERSION from the Rust package registry into $TOOLS_ROOT (once; a few minutes)"
        # A kept target dir lets an interrupted install resume.
        cargo install --locked --quiet oha --version "$OHA_VERSION" --root "$TOOLS_ROOT" \
            --target-dir "$TOOLS_ROOT/build"
    fi

    # npm ci wipes node_modules; skip it while the lock file is unchanged.
    local stamp="$EXPRESS_DIR/node_modules/.bench-lock.sha256"
    local want
    want="$(sha256sum "$EXPRESS_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        echo "== npm ci in bench/peers/express"
        (cd "$EXPRESS_DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$want" >"$stamp"
    fi
}

# versions: one `key=value` line per tool, for the report.
versions() {
    echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk=$("$WRK" -v 2>&1 | head -n1 | cut -d' ' -f2)"
    echo "oha=$("$OHA" --version 2>/dev/null | cut -d' ' -f2 || echo 'not installed')"
    echo "node=$(node -v)"
    local pkg
    for pkg in express express-rate-limit undici; do
        echo "$pkg=$(node -p "require('$EXPRESS_DIR/node_modules/$pkg/package.json').version")"
    done
}
