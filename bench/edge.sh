#!/usr/bin/env bash
# The edge benchmark in one command: builds connectord and the benchmark, then
# runs edge-bench with the given options (see `edge-bench --help`).
#   bench/edge.sh                 # the full run (release build; about 8 minutes)
#   bench/edge.sh --soak          # connectord's resident size over 60 s of load
#   bench/edge.sh --smoke ...     # CI: debug build, 1 s per server, no timing asserted
# Needs node and npm (the Node.js peer is installed with `npm ci` in bench/node)
# and PostgreSQL on 127.0.0.1:5432 (or --no-postgres / --postgres-url URL).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
profile=release
for arg in "$@"; do
    [[ "$arg" == "--smoke" ]] && profile=debug
done
if [[ "$profile" == release ]]; then
    cargo build --release --locked -p connectord -p connectord-bench
else
    cargo build --locked -p connectord -p connectord-bench
fi
exec "$target/$profile/edge-bench" "$@"
