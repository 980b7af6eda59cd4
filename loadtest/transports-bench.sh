#!/usr/bin/env bash
# Measures Switchboard's Server-Sent Events and Long Polling transports against its WebSockets
# in one run on this machine, with one generator (switchboard-loadgen --transport), and prints
# the ratios docs/benchmarks.md reports ("Transports (SSE, Long Polling)"):
#   - idle memory per connection (server RSS growth over CONNECTIONS idle clients);
#   - broadcast deliveries/s under a burst of BURST messages to CONNECTIONS clients, and
#     whether every one of them arrived;
#   - p99 latency at 1,000 deliveries/s (1,000 clients, one broadcast per second).
# Every scenario gets a freshly started `switchboard serve` (default keep-alive 15 s and client
# timeout 30 s), the transports run one after another within each scenario, and every run
# appends one JSON line to the results file; the tables are printed at the end and written to
# target/bench/transports-STAMP.md.
#
#   loadtest/transports-bench.sh                        # the documented run (~4 minutes + the build)
#   ROUNDS=1 CONNECTIONS=10000 BURST=100 loadtest/transports-bench.sh
#
# Knobs (environment): ROUNDS (2: every scenario this many times, the transports alternating,
# each round its own row), CONNECTIONS (5000), BURST (200 messages), LATENCY_CLIENTS (1000),
# LATENCY_SECONDS (20), TRANSPORTS ("websockets sse longpolling"), BENCH_PROFILE (release),
# BENCH_OUT (results directory), SB_PORT (18480: not the port of bench.sh, which may run at the
# same time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-5000}
BURST=${BURST:-200}
LATENCY_CLIENTS=${LATENCY_CLIENTS:-1000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
TRANSPORTS=${TRANSPORTS:-websockets sse longpolling}
PROFILE=${BENCH_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in dev) BIN_DIR=$TARGET_DIR/debug ;; *) BIN_DIR=$TARGET_DIR/$PROFILE ;; esac
OUT=${BENCH_OUT:-$TARGET_DIR/bench}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$OUT/transports-$STAMP.jsonl
REPORT=$OUT/transports-$STAMP.md
ACCESS_KEY=bench-access-key-0123456789ABCDEFGHIJKLMNOP
SB_PORT=${SB_PORT:-18480}
mkdir -p "$OUT"

# Every socket is a file: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "==> open files: $(ulimit -n)"

echo "==> building ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p switchboard -p switchboard-loadgen
LOADGEN=$BIN_DIR/switchboard-loadgen

{
    echo "# transports bench $STAMP (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    echo "- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "- load before: $(uptime | sed 's/.*load average: //')"
    echo "- $CONNECTIONS connections (idle, burst of $BURST), $LATENCY_CLIENTS at 1 msg/s for ${LATENCY_SECONDS} s; $ROUNDS round(s); profile: $PROFILE"
    echo
} >"$REPORT"

SERVER_PID=
SERVER_LOG=
DATA_DIR=

wait_http() { # url
    for _ in $(seq 1 200); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server did not answer $1; log:" >&2
    tail -n 30 "$SERVER_LOG" >&2 || true
    return 1
}

start_server() {
    SERVER_LOG=$OUT/server-transports-$STAMP.log
    DATA_DIR=$(mktemp -d)
    "$BIN_DIR/switchboard" serve --listen "127.0.0.1:$SB_PORT" --data-dir "$DATA_DIR" \
        --access-key "$ACCESS_KEY" --print-connection-string false >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    wait_http "http://127.0.0.1:$SB_PORT/readyz"
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
    if [ -n "$DATA_DIR" ]; then
        rm -rf "$DATA_DIR"
        DATA_DIR=
    fi
}
trap stop_server EXIT

# run TRANSPORT LABEL [loadgen args...]: one scenario against a fresh server.
run() {
    local transport=$1 label=$2
    shift 2
    start_server
    echo "==> $transport: $label"
    "$LOADGEN" --target switchboard --url "http://127.0.0.1:$SB_PORT" --access-key "$ACCESS_KEY" \
        --transport "$transport" --server-pid "$SERVER_PID" --label "$label" --json "$@" \
        >>"$RESULTS" || echo "    (run failed: $transport $label)" >&2
    stop_server
}

# round K: the label suffix of round K (none when there is one round).
round() {
    if [ "$ROUNDS" -gt 1 ]; then echo ", round $1"; fi
}

for k in $(seq 1 "$ROUNDS"); do
    for transport in $TRANSPORTS; do
        run "$transport" "idle memory, $CONNECTIONS conns$(round "$k")" \
            --scenario idle --connections "$CONNECTIONS" --connect-rate 2000 --duration 0 --settle 3
    done
done
for k in $(seq 1 "$ROUNDS"); do
    for transport in $TRANSPORTS; do
        run "$transport" "broadcast burst $BURST, $CONNECTIONS conns$(round "$k")" \
            --scenario broadcast --connections "$CONNECTIONS" --connect-rate 2000 --burst "$BURST" \
            --send-concurrency 4 --drain 10
    done
done
for k in $(seq 1 "$ROUNDS"); do
    for transport in $TRANSPORTS; do
        run "$transport" "latency, $LATENCY_CLIENTS conns x 1 msg/s$(round "$k")" \
            --scenario broadcast --connections "$LATENCY_CLIENTS" --rate 1 --duration "$LATENCY_SECONDS"
    done
done

{
    "$LOADGEN" compare "$RESULTS"
    echo
    echo "- load after: $(uptime | sed 's/.*load average: //')"
} >>"$REPORT"
echo
cat "$REPORT"
echo
echo "results: $RESULTS"
echo "tables:  $REPORT"
