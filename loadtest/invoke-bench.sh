#!/usr/bin/env bash
# Measures client invocations through Switchboard to a serverless upstream against the same
# calls made straight to that upstream, in one run (docs/benchmarks.md, "Upstream invocations"):
#   1. starts `upstream-server` (answers every invocation with a completion) and a fresh
#      `switchboard serve --upstream` pointing at it;
#   2. at a fixed rate (RATE, 1000/s) and at the maximum rate, runs the phases
#      direct,switchboard,direct,switchboard with CONNECTIONS lanes (100) for DURATION (10) seconds each,
#      and prints the tables (also written to target/bench/invoke-STAMP.md).
#
#   loadtest/invoke-bench.sh
#   RATE=5000 CONNECTIONS=1000 loadtest/invoke-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RATE=${RATE:-1000}
CONNECTIONS=${CONNECTIONS:-100}
SECONDS_EACH=${DURATION:-10}
PROFILE=${BENCH_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in dev) BIN_DIR=$TARGET_DIR/debug ;; *) BIN_DIR=$TARGET_DIR/$PROFILE ;; esac
OUT=${BENCH_OUT:-$TARGET_DIR/bench}
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$OUT/invoke-$STAMP.md
ACCESS_KEY=bench-access-key-0123456789ABCDEFGHIJKLMNOP
SB_PORT=${SB_PORT:-18080}
UP_PORT=${UP_PORT:-18091}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "==> building ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p switchboard -p switchboard-loadgen

DATA=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

wait_http() {
    for _ in $(seq 1 100); do
        if curl -sf -o /dev/null "$1"; then return 0; fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

"$BIN_DIR/upstream-server" --listen "127.0.0.1:$UP_PORT" >"$DATA/upstream.log" 2>&1 &
PIDS+=($!)
"$BIN_DIR/switchboard" serve --listen "127.0.0.1:$SB_PORT" --data-dir "$DATA/sb" \
    --access-key "$ACCESS_KEY" --print-connection-string false \
    --upstream "http://127.0.0.1:$UP_PORT/api/{category}/{event}" >"$DATA/switchboard.log" 2>&1 &
SB_PID=$!
PIDS+=("$SB_PID")
wait_http "http://127.0.0.1:$SB_PORT/readyz"

CS="Endpoint=http://127.0.0.1:$SB_PORT;AccessKey=$ACCESS_KEY;Version=1.0;"
run() {
    "$BIN_DIR/switchboard-loadgen" invoke --connection-string "$CS" \
        --upstream "http://127.0.0.1:$UP_PORT/api/messages/bench" \
        --connections "$CONNECTIONS" --duration "$SECONDS_EACH" --server-pid "$SB_PID" \
        --phases direct,switchboard,direct,switchboard "$@"
}
{
    echo "# invoke bench $STAMP ($(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    run --rate "$RATE" --label "$RATE/s"
    echo
    run --label "max"
} | tee "$REPORT"
echo "==> written to $REPORT"
