#!/usr/bin/env bash
# The cache-hit benchmark is scenario 3 of the suite: a route-level cache
# hit against a minimal hyper server answering the same bytes. See
# bench/README.md; RUNS, QUICK and the other options apply.
exec env ONLY=cache "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
