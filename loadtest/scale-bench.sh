#!/usr/bin/env bash
# Scale across gateways, for docs/benchmarks.md ("Scale across gateways"): three
# `switchboard store` voters and two stateless gateways A and B on 127.0.0.x.
#   1. N clients (one user each) connect to A and stay: how much B's RSS grows per connection A
#      holds, A's RSS per connection, and the bytes the three voters write to disk
#      (/proc/PID/io write_bytes) per client connect.
#   2. A reconnect storm: A is killed (SIGKILL) and N clients connect to B at once (no pacing,
#      256 attempts in flight): connect rate, handshake p99, failures. The same burst into a
#      fresh single node (`serve`, the embedded default) in the same run is the yardstick.
#   3. Cross-gateway fan-out: clients on B, REST sends through a voter-less gateway C, a burst
#      of broadcasts and of group sends, against the same bursts into the single node.
# BINS: directories holding a `switchboard` binary, measured in turn (default: the release
# build; e.g. BINS="/tmp/old/release target/release" for before and after in one run). The
# generator is always this tree's. Knobs: N (10000).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
N=${N:-10000}
KEY=scale-bench-key
if [ -z "${NO_BUILD:-}" ]; then
    echo "==> building (release)" >&2
    cargo build --release --locked --bin switchboard --bin switchboard-loadgen >&2
fi
BINS=${BINS:-$TARGET_DIR/release}
LOADGEN=$TARGET_DIR/release/switchboard-loadgen
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
    for _ in $(seq 300); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.2; done
    echo "not ready: $1" >&2
    return 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
connections() { curl -sf "$1/metrics" | awk '/^switchboard_connections / {print $2}'; }
loadgen() { "$LOADGEN" --access-key "$KEY" --hub scale --json "$@" 2>/dev/null | tail -1; }
# field JSON KEY: one figure of a generator report (KEY may be a.b; "errors" sums every kind).
field() {
    python3 -c '
import json, sys
d = json.loads(sys.argv[1])
if sys.argv[2] == "errors":
    print(sum(d.get("errors", {}).values()) + d.get("connect_errors", 0))
else:
    for k in sys.argv[2].split("."):
        d = (d or {}).get(k)
    print(round(d, 2) if isinstance(d, float) else d)' "$1" "$2"
}

for BIN_DIR in $BINS; do
    SB=$BIN_DIR/switchboard
    echo "== $SB"
    rm -rf "${DATA:?}"/*
    VOTERS=()
    PEERS=1=127.0.0.1:17401,2=127.0.0.2:17402,3=127.0.0.3:17403
    for i in 1 2 3; do
        "$SB" store --node-id "$i" --listen "127.0.0.$i:1840$i" --cluster-listen "127.0.0.$i:1740$i" \
            --peers "$PEERS" --data-dir "$DATA/store-$i" --access-key "$KEY" 2>"$DATA/store-$i.log" &
        PIDS+=($!)
        VOTERS+=($!)
    done
    STORE=127.0.0.1:17401,127.0.0.2:17402,127.0.0.3:17403
    for g in 4 5 6; do
        "$SB" gateway --node-id "1$g" --listen "127.0.0.$g:1840$g" --cluster-listen "127.0.0.$g:1740$g" \
            --store "$STORE" --access-key "$KEY" --max-connections 20000 \
            >/dev/null 2>"$DATA/gateway-$g.log" &
        PIDS+=($!)
    done
    A_PID=${PIDS[3]}
    B_PID=${PIDS[4]}
    A=http://127.0.0.4:18404
    B=http://127.0.0.5:18405
    C=http://127.0.0.6:18406
    for u in "$A" "$B" "$C"; do wait_ready "$u"; done
    sleep 2

    # 1. N clients on A. First the voters' writes over an idle window as long as the run (the
    #    gateways' lease renewals), then during it.
    voters_written() {
        local sum=0
        for p in "${VOTERS[@]}"; do sum=$((sum + $(written "$p"))); done
        echo "$sum"
    }
    idle_start=$(voters_written)
    idle_t0=$(date +%s.%N)
    sleep 20
    idle_bytes=$(($(voters_written) - idle_start))
    idle_secs=$(python3 -c "import time; print(time.time() - $idle_t0)")
    b_before=$(rss_kib "$B_PID")
    w_before=$(voters_written)
    run_t0=$(date +%s.%N)
    "$LOADGEN" --access-key "$KEY" --hub scale --url "$A" --scenario user --connections "$N" \
        --connect-rate 2000 --rate 1 --duration 12 --settle 3 --server-pid "$A_PID" --json \
        >"$DATA/hold.json" 2>/dev/null &
    HOLD=$!
    for _ in $(seq 600); do
        [ "$(connections "$A")" = "$N" ] && break
        sleep 0.1
    done
    sleep 4
    b_after=$(rss_kib "$B_PID")
    w_after=$(voters_written)
    run_secs=$(python3 -c "import time; print(time.time() - $run_t0)")
    wait "$HOLD" || true
    hold=$(tail -1 "$DATA/hold.json")
    echo "clients on A: $N (connected: $(field "$hold" opened))"
    echo "  A KiB/conn: $(field "$hold" kib_per_connection)"
    echo "  B RSS growth per A-connection: $(python3 -c "print(round(($b_after - $b_before) / $N * 1024, 1))") bytes ($b_before -> $b_after KiB)"
    echo "  voters' disk writes per connect (3 voters together): $(python3 -c "print(round(($w_after - $w_before) / $N, 1))") bytes in ${run_secs%.*} s; with the idle rate (leases, $idle_bytes bytes in ${idle_secs%.*} s) taken out: $(python3 -c "print(round(max(0, ($w_after - $w_before) - $idle_bytes * $run_secs / $idle_secs) / $N, 1))") bytes"

    # 2. A dies; N clients storm B.
    kill -9 "$A_PID"
    storm=$(loadgen --url "$B" --scenario idle --connections "$N" --connect-rate 0 \
        --connect-concurrency 256 --duration 0 --settle 1)
    echo "storm on B after A died: $(field "$storm" connect_per_s) conn/s, p99 $(field "$storm" connect_p99_ms) ms, errors $(field "$storm" errors)"

    # 3. Clients on B, REST through C.
    for scenario in "broadcast --connections 2000 --burst 200" "group --connections 2000 --groups 20 --burst 2000"; do
        # shellcheck disable=SC2086
        r=$(loadgen --url "$B" --rest-url "$C" --scenario $scenario --send-concurrency 8 --connect-rate 2000)
        echo "  ${scenario%% *} on B via C: $(field "$r" deliveries_per_s) deliveries/s, p99 $(field "$r" latency_ms.p99) ms, drops $(field "$r" drops), errors $(field "$r" errors)"
    done
    stop_all

    # The yardstick: one fresh single node.
    "$SB" serve --listen 127.0.0.7:18407 --data-dir "$DATA/single" --access-key "$KEY" \
        --max-connections 20000 --print-connection-string false 2>"$DATA/single.log" &
    PIDS+=($!)
    wait_ready http://127.0.0.7:18407
    single=$(loadgen --url http://127.0.0.7:18407 --scenario idle --connections "$N" --connect-rate 0 \
        --connect-concurrency 256 --duration 0 --settle 1)
    echo "storm on a fresh single node: $(field "$single" connect_per_s) conn/s, p99 $(field "$single" connect_p99_ms) ms, errors $(field "$single" errors)"
    for scenario in "broadcast --connections 2000 --burst 200" "group --connections 2000 --groups 20 --burst 2000"; do
        # shellcheck disable=SC2086
        r=$(loadgen --url http://127.0.0.7:18407 --scenario $scenario --send-concurrency 8 --connect-rate 2000)
        echo "  ${scenario%% *} on the single node: $(field "$r" deliveries_per_s) deliveries/s, p99 $(field "$r" latency_ms.p99) ms, drops $(field "$r" drops), errors $(field "$r" errors)"
    done
    stop_all
done
