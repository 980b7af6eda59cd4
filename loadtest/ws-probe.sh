#!/usr/bin/env bash
# WebSocket idle memory measured without the Rust generator: starts a fresh `switchboard serve`
# (release build, a temporary data dir, port 18490) and runs loadtest/ws-probe.mjs against it
# ROUNDS times, each on a fresh server; prints one JSON line per round.
#
#   loadtest/ws-probe.sh                  # ROUNDS=3 CONNECTIONS=10000
#   SB_ENV="env MALLOC_ARENA_MAX=1" loadtest/ws-probe.sh    # a prefix for the server's command
#
# Needs Node 18+ and the clients of tests/js (npm ci --prefix tests/js).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-10000}
PORT=${SB_PORT:-18490}
SB_ENV=${SB_ENV:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
KEY=probe-access-key-0123456789ABCDEFGHIJKLMNOP
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p switchboard
BIN=$TARGET_DIR/release/switchboard
for round in $(seq 1 "$ROUNDS"); do
    DATA=$(mktemp -d)
    $SB_ENV "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --access-key "$KEY" \
        >"$DATA/log" 2>&1 &
    PID=$!
    trap 'kill $PID 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    CS="Endpoint=http://127.0.0.1:$PORT;AccessKey=$KEY;Version=1.0;"
    TOKEN=$("$BIN" token --connection-string "$CS" --hub probe --only token)
    echo -n "round $round: "
    node loadtest/ws-probe.mjs --url "http://127.0.0.1:$PORT" --token "$TOKEN" --pid "$PID" \
        --connections "$CONNECTIONS"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
done
