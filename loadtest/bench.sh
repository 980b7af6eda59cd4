#!/usr/bin/env bash
# Measures Switchboard against two baselines in one run on this machine, with one generator
# (switchboard-loadgen), and prints the ratios docs/benchmarks.md reports:
#   - baseline-server: a bare tokio WebSocket broadcast server speaking just enough SignalR
#     (the ceiling for this machine and client);
#   - Socket.IO 4 on Node (loadtest/socketio, installed from npm here).
# Each scenario gets a freshly started server, the servers run one after another, and every
# run appends one JSON line to the results file; the Markdown tables are printed at the end
# and written next to it.
#
#   loadtest/bench.sh                          # the documented run (about 6 minutes + the build)
#   CONNECTIONS=18000 PROCESSES=2 loadtest/bench.sh   # larger: see docs/benchmarks.md
#
# Knobs (environment): CONNECTIONS (10000: idle memory and broadcast burst), BURST (200
# messages), CONNECT_N (5000: connect-rate run), CONNECT_CONCURRENCY (256 attempts in
# flight), LATENCY_SECONDS (20), RATE_CLIENTS (1000: user/group/connection runs), PROCESSES
# (1 generator process; each holds at most 19,000 connections), TARGETS ("switchboard
# baseline socketio"), BENCH_PROFILE (release), BENCH_OUT (results directory), PERF (1: perf
# stat the server during the bursts, if present).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CONNECTIONS=${CONNECTIONS:-10000}
BURST=${BURST:-200}
CONNECT_N=${CONNECT_N:-5000}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-256}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
RATE_CLIENTS=${RATE_CLIENTS:-1000}
PROCESSES=${PROCESSES:-1}
TARGETS=${TARGETS:-switchboard baseline socketio}
PROFILE=${BENCH_PROFILE:-release}
PERF=${PERF:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in dev) BIN_DIR=$TARGET_DIR/debug ;; *) BIN_DIR=$TARGET_DIR/$PROFILE ;; esac
OUT=${BENCH_OUT:-$TARGET_DIR/bench}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$OUT/bench-$STAMP.jsonl
REPORT=$OUT/bench-$STAMP.md
ACCESS_KEY=bench-access-key-0123456789ABCDEFGHIJKLMNOP
SB_PORT=${SB_PORT:-18080}
BL_PORT=${BL_PORT:-18090}
SIO_PORT=${SIO_PORT:-13000}
mkdir -p "$OUT"

# Every socket is a file: take the hard limit (20,000 here).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "==> open files: $(ulimit -n); generator processes: $PROCESSES"

echo "==> building ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p switchboard -p switchboard-loadgen
if [[ " $TARGETS " == *" socketio "* ]]; then
    echo "==> installing Socket.IO (npm ci)"
    npm ci --prefix loadtest/socketio --no-audit --no-fund --loglevel=error
fi
LOADGEN=$BIN_DIR/switchboard-loadgen

{
    echo "# bench $STAMP"
    echo
    echo "- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "- load before: $(uptime | sed 's/.*load average: //')"
    echo "- generator processes: $PROCESSES; open files: $(ulimit -n); profile: $PROFILE"
    echo
} > "$REPORT"

# Software counters, plus the socket syscalls when tracepoints are readable.
PERF_EVENTS=task-clock,context-switches,cpu-migrations,page-faults
SYSCALLS=syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
if [ "$PERF" = 1 ] && command -v perf >/dev/null 2>&1 \
    && perf stat -e "$SYSCALLS" -- true >/dev/null 2>&1; then
    PERF_EVENTS=$PERF_EVENTS,$SYSCALLS
fi

SERVER_PID=
SERVER_URL=
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

start_server() { # target
    SERVER_LOG=$OUT/server-$1.log
    case "$1" in
        switchboard)
            DATA_DIR=$(mktemp -d)
            "$BIN_DIR/switchboard" serve --listen "127.0.0.1:$SB_PORT" --data-dir "$DATA_DIR" \
                --access-key "$ACCESS_KEY" >>"$SERVER_LOG" 2>&1 &
            SERVER_PID=$!
            SERVER_URL=http://127.0.0.1:$SB_PORT
            wait_http "$SERVER_URL/readyz"
            ;;
        baseline)
            "$BIN_DIR/baseline-server" --listen "127.0.0.1:$BL_PORT" >>"$SERVER_LOG" 2>&1 &
            SERVER_PID=$!
            SERVER_URL=http://127.0.0.1:$BL_PORT
            wait_http "$SERVER_URL/health"
            ;;
        socketio)
            node loadtest/socketio/server.js --listen "127.0.0.1:$SIO_PORT" >>"$SERVER_LOG" 2>&1 &
            SERVER_PID=$!
            SERVER_URL=http://127.0.0.1:$SIO_PORT
            wait_http "$SERVER_URL/health"
            ;;
    esac
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

# run TARGET LABEL [loadgen args...]: one scenario against a fresh server.
run() {
    local target=$1 label=$2
    shift 2
    start_server "$target"
    local perf_pid=
    if [ "$PERF" = 1 ] && [[ "$label" == broadcast* ]] && command -v perf >/dev/null 2>&1; then
        perf stat -e "$PERF_EVENTS" -p "$SERVER_PID" \
            -o "$OUT/perf-$STAMP-$target-${label//[ ,]/_}.txt" 2>/dev/null &
        perf_pid=$!
    fi
    echo "==> $target: $label"
    "$LOADGEN" --target "$target" --url "$SERVER_URL" --access-key "$ACCESS_KEY" \
        --server-pid "$SERVER_PID" --processes "$PROCESSES" --label "$label" --json "$@" \
        >>"$RESULTS" || echo "    (run failed: $target $label)" >&2
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    stop_server
}

for target in $TARGETS; do
    run "$target" "idle memory, $CONNECTIONS conns" \
        --scenario idle --connections "$CONNECTIONS" --connect-rate 2000 --duration 0 --settle 3
    run "$target" "connect rate, $CONNECT_N conns" \
        --scenario idle --connections "$CONNECT_N" --connect-rate 0 --connect-concurrency "$CONNECT_CONCURRENCY" --duration 0 --settle 0
    run "$target" "broadcast burst $BURST, $CONNECTIONS conns" \
        --scenario broadcast --connections "$CONNECTIONS" --connect-rate 2000 --burst "$BURST" --send-concurrency 4
    run "$target" "latency, 100 conns x 10 msg/s" \
        --scenario broadcast --connections 100 --rate 10 --duration "$LATENCY_SECONDS"
    run "$target" "latency, 1000 conns x 1 msg/s" \
        --scenario broadcast --connections 1000 --rate 1 --duration "$LATENCY_SECONDS"
    if [ "$target" != socketio ]; then
        run "$target" "broadcast burst $BURST, $CONNECTIONS conns, messagepack" \
            --scenario broadcast --connections "$CONNECTIONS" --connect-rate 2000 --burst "$BURST" \
            --send-concurrency 4 --protocol messagepack
    fi
    if [ "$target" = switchboard ]; then
        run "$target" "send to connection, 1000 msg/s" \
            --scenario connection --connections "$RATE_CLIENTS" --rate 1000 --duration "$LATENCY_SECONDS"
        run "$target" "send to user, 1000 msg/s" \
            --scenario user --connections "$RATE_CLIENTS" --rate 1000 --duration "$LATENCY_SECONDS"
        run "$target" "send to group of 10, 100 msg/s" \
            --scenario group --connections "$RATE_CLIENTS" --groups $((RATE_CLIENTS / 10)) --rate 100 \
            --duration "$LATENCY_SECONDS"
    fi
done

{
    "$LOADGEN" compare "$RESULTS"
    echo
    echo "- load after: $(uptime | sed 's/.*load average: //')"
    for f in "$OUT"/perf-"$STAMP"-*.txt; do
        [ -f "$f" ] || continue
        echo
        echo "perf stat of the server over the whole run, $(basename "$f" .txt | sed "s/^perf-$STAMP-//"):"
        echo '```'
        grep -E 'task-clock|context-switches|sys_enter|elapsed' "$f" | sed 's/  */ /g'
        echo '```'
    done
} >>"$REPORT"
echo
cat "$REPORT"
echo
echo "results: $RESULTS"
echo "tables:  $REPORT"
