#!/usr/bin/env bash
# The Redis engine against the Raft engine, one run (docs/benchmarks.md, "Engines"):
# three stateless gateways on 127.0.1.1-3 in front of either three `switchboard store` voters
# (Raft, fsync) or one redis-server (Redis, appendfsync everysec, Redis's default for AOF).
# Clients connect to gateway 1, REST calls go through gateway 2, so every message crosses
# gateways (gRPC links on Raft, pub/sub on Redis). Per engine: connect rate (idle), then
# REST -> client latency for connection, user, group and broadcast sends.
# Builds in release unless NO_BUILD is set (BIN_DIR then points at the binaries).
# Knobs: SECONDS_EACH (10), CONNECTIONS (5000, opened as fast as the generator can).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN_DIR=${BIN_DIR:-$TARGET_DIR/release}
SECONDS_EACH=${SECONDS_EACH:-10}
CONNECTIONS=${CONNECTIONS:-5000}
KEY=engines-bench-key

if [ -z "${NO_BUILD:-}" ]; then
    echo "==> building (release)"
    cargo build --release --locked --bin switchboard --bin switchboard-loadgen
    BIN_DIR=$TARGET_DIR/release
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATA=$(mktemp -d)
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
trap 'stop_all; rm -rf "$DATA"' EXIT

wait_ready() {
    for _ in $(seq 150); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.2; done
    echo "not ready: $1" >&2
    return 1
}

for engine in raft redis; do
    if [ "$engine" = raft ]; then
        PEERS=1=127.0.0.1:17201,2=127.0.0.2:17202,3=127.0.0.3:17203
        for i in 1 2 3; do
            "$BIN_DIR/switchboard" store --node-id "$i" --listen "127.0.0.$i:1820$i" \
                --cluster-listen "127.0.0.$i:1720$i" --peers "$PEERS" --data-dir "$DATA/store-$i" \
                --access-key "$KEY" 2>"$DATA/store-$i.log" &
            PIDS+=($!)
        done
        for i in 1 2 3; do wait_ready "http://127.0.0.$i:1820$i"; done
        STORES=127.0.0.1:17201,127.0.0.2:17202,127.0.0.3:17203
        ENGINE_ARGS=(--store "$STORES")
    else
        redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
            --dir "$DATA" >"$DATA/redis.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 50); do redis-cli -p 16390 ping >/dev/null 2>&1 && break; sleep 0.1; done
        ENGINE_ARGS=(--redis redis://127.0.0.1:16390)
    fi
    for i in 1 2 3; do
        "$BIN_DIR/switchboard" gateway --listen "127.0.1.$i:1830$i" --cluster-listen "127.0.1.$i:1730$i" \
            "${ENGINE_ARGS[@]}" --access-key "$KEY" 2>"$DATA/gateway-$engine-$i.log" &
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_ready "http://127.0.1.$i:1830$i"; done
    for scenario in "idle --connections $CONNECTIONS --connect-rate 0" "connection --connections 1000 --rate 1000" \
        "user --connections 1000 --rate 1000" "group --connections 1000 --groups 100 --rate 100" \
        "broadcast --connections 1000 --rate 10"; do
        echo "==> [$engine] $scenario: clients on gateway 1, REST through gateway 2"
        # shellcheck disable=SC2086
        "$BIN_DIR/switchboard-loadgen" --url http://127.0.1.1:18301 --rest-url http://127.0.1.2:18302 \
            --access-key "$KEY" --scenario $scenario --duration "$SECONDS_EACH" 2>&1 \
            | grep -E "connect|deliveries|latency|errors" || true
    done
    stop_all
done
