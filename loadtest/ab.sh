#!/usr/bin/env bash
# Compares two builds of switchboard on the same machine in one run, alternating them round by
# round so that machine noise hits both alike:
#
#   loadtest/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Scenarios (single node, one generator process): idle memory at 10,000 connections, connect
# rate for 5,000 connections (256 in flight), and REST send-to-connection at 1,000 msg/s for 20 s
# over 1,000 connections. Prints one line per run and a table of medians per build. The
# generator is the current tree's switchboard-loadgen (built in release).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: loadtest/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]}
NEW=${2:?usage: loadtest/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]}
ROUNDS=${3:-2}
KEY=ab-access-key-0123456789ABCDEFGHIJKLMNOPQRSTUV
PORT=${AB_PORT:-18280}
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --release --locked -p switchboard-loadgen
LOADGEN=$TARGET_DIR/release/switchboard-loadgen
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.txt

run() { # build-label binary scenario-label loadgen-args...
    local label=$1 bin=$2 scenario=$3
    shift 3
    rm -rf "$WORK/data"
    "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --access-key "$KEY" \
        --print-connection-string false 2>"$WORK/server.log" &
    local pid=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local out
    out=$("$LOADGEN" --target switchboard --url "http://127.0.0.1:$PORT" --access-key "$KEY" \
        --server-pid "$pid" "$@" 2>&1)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local kib rate p99
    kib=$(grep -oE '[0-9.]+ KiB per connection' <<<"$out" | grep -oE '^[0-9.]+' || echo -)
    rate=$(grep -oE '[0-9]+ conn/s \(limit none\)' <<<"$out" | grep -oE '^[0-9]+' || echo -)
    p99=$(grep -E '^ *latency' <<<"$out" | sed -E 's/.* p99 ([0-9.]+) ms.*/\1/' || true)
    [ -n "$p99" ] || p99=-
    echo "$label | $scenario | KiB/conn $kib | conn/s $rate | p99 ms $p99"
    echo "$label|$scenario|$kib|$rate|$p99" >>"$RESULTS"
}

for _ in $(seq "$ROUNDS"); do
    for side in old new; do
        if [ "$side" = old ]; then bin=$OLD; else bin=$NEW; fi
        run "$side" "$bin" "idle memory, 10000 conns" \
            --scenario idle --connections 10000 --connect-rate 2000 --duration 0 --settle 3
        run "$side" "$bin" "connect rate, 5000 conns" \
            --scenario idle --connections 5000 --connect-rate 0 --connect-concurrency 256
        run "$side" "$bin" "send to connection, 1000 msg/s" \
            --scenario connection --connections 1000 --rate 1000 --duration 20
    done
done

echo
echo "| scenario | metric | old (median) | new (median) | new ÷ old |"
echo "| --- | --- | ---: | ---: | ---: |"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.strip().split("|") for line in open(sys.argv[1]) if line.strip()]
for scenario, col, name in [
    ("idle memory, 10000 conns", 2, "KiB per connection"),
    ("connect rate, 5000 conns", 3, "connections/s"),
    ("send to connection, 1000 msg/s", 4, "p99 latency ms"),
]:
    def med(side):
        values = [float(r[col]) for r in rows if r[0] == side and r[1] == scenario and r[col] != "-"]
        return statistics.median(values) if values else float("nan")
    old, new = med("old"), med("new")
    print(f"| {scenario} | {name} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
EOF
