#!/usr/bin/env bash
# Side-by-side benchmarks of herder and PM2; writes docs/BENCHMARKS.md and bench/results/*.json.
# Not for CI: it installs PM2 from npm into a temporary folder. See bench/README.md.
#
#   bench/run.sh [--quick] [--tools herder,pm2] [part ...]
set -euo pipefail
cd "$(dirname "$0")/.."

TMP_PARENT="${HERDER_BENCH_TMP:-/tmp/herder-bench}"
export HERDER_BENCH_PM2_DIR="${HERDER_BENCH_PM2_DIR:-$TMP_PARENT/pm2}"
PM2_VERSION="${PM2_VERSION:-latest}"

child=
cleanup() { [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null; true; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [ ! -x "$HERDER_BENCH_PM2_DIR/node_modules/.bin/pm2" ]; then
  echo "[run.sh] installing pm2@$PM2_VERSION into $HERDER_BENCH_PM2_DIR" >&2
  mkdir -p "$HERDER_BENCH_PM2_DIR"
  (
    cd "$HERDER_BENCH_PM2_DIR"
    [ -f package.json ] || npm init -y >/dev/null
    timeout 900 npm install --no-audit --no-fund "pm2@$PM2_VERSION" >&2
  )
fi

if [ "${HERDER_BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${HERDER_BIN:-}" ]; then
  timeout 1800 cargo build --release >&2
fi

python3 bench/run.py "$@" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit $rc
