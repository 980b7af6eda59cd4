#!/usr/bin/env bash
# Cluster figures for docs/benchmarks.md:
#   1. REST -> client latency across gateways: three `serve` nodes on 127.0.0.1-3, clients on
#      node 1, REST calls through node 2 (send to connection, user, group, broadcast).
#   2. Membership writes through Raft: three `switchboard store` voters (fsync), writers going
#      through a RemoteStore as a stateless gateway does (crates/store/examples/write_bench.rs).
# Builds in release unless BIN_DIR points at built binaries (switchboard, switchboard-loadgen,
# examples/write_bench). Knobs: SECONDS_EACH (15), WRITERS ("64 256 1024").
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN_DIR=${BIN_DIR:-$TARGET_DIR/release}
SECONDS_EACH=${SECONDS_EACH:-15}
WRITERS=${WRITERS:-64 256 1024}
KEY=cluster-bench-key

if [ -z "${NO_BUILD:-}" ]; then
    echo "==> building (release)"
    cargo build --release --locked --bin switchboard --bin switchboard-loadgen
    cargo build --release --locked -p switchboard-store --example write_bench
    BIN_DIR=$TARGET_DIR/release
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATA=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

wait_ready() {
    for _ in $(seq 150); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.2; done
    echo "not ready: $1" >&2
    return 1
}

echo "==> three serve nodes"
PEERS=1=127.0.0.1:17101,2=127.0.0.2:17102,3=127.0.0.3:17103
for i in 1 2 3; do
    "$BIN_DIR/switchboard" serve --node-id "$i" --listen "127.0.0.$i:1810$i" \
        --cluster-listen "127.0.0.$i:1710$i" --peers "$PEERS" --data-dir "$DATA/serve-$i" \
        --access-key "$KEY" --print-connection-string false 2>"$DATA/serve-$i.log" &
    PIDS+=($!)
done
for i in 1 2 3; do wait_ready "http://127.0.0.$i:1810$i"; done
for scenario in "connection --connections 1000 --rate 1000" "user --connections 1000 --rate 1000" \
    "group --connections 1000 --groups 100 --rate 100" "broadcast --connections 100 --rate 10"; do
    echo "==> $scenario: clients on node 1, REST through node 2"
    # shellcheck disable=SC2086
    "$BIN_DIR/switchboard-loadgen" --url http://127.0.0.1:18101 --rest-url http://127.0.0.2:18102 \
        --access-key "$KEY" --scenario $scenario --duration "$SECONDS_EACH" 2>&1 \
        | grep -E "deliveries|latency|errors"
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

echo "==> three store voters"
PEERS=1=127.0.0.1:17201,2=127.0.0.2:17202,3=127.0.0.3:17203
for i in 1 2 3; do
    "$BIN_DIR/switchboard" store --node-id "$i" --listen "127.0.0.$i:1820$i" \
        --cluster-listen "127.0.0.$i:1720$i" --peers "$PEERS" --data-dir "$DATA/store-$i" \
        --access-key "$KEY" \
        2>"$DATA/store-$i.log" &
    PIDS+=($!)
done
for i in 1 2 3; do wait_ready "http://127.0.0.$i:1820$i"; done
for w in $WRITERS; do
    echo "==> $w writers through a remote store"
    "$BIN_DIR/examples/write_bench" --voters 127.0.0.1:17201,127.0.0.2:17202,127.0.0.3:17203 \
        --writers "$w" --seconds 10 | grep -E "throughput|p50|p99"
done
