#!/usr/bin/env bash
# A Switchboard cluster on this machine, in the foreground, for trying things out. Ctrl-C stops
# every node with SIGTERM (gateways first, store voters last) and waits for them to exit.
#
#   deploy/local-cluster.sh            # 3 `switchboard serve` nodes (gateway + store voter each)
#   deploy/local-cluster.sh --stores   # 3 `switchboard store` voters and 2 `switchboard gateway`s
#   deploy/local-cluster.sh --clean    # wipe ./local-cluster first: a new cluster and a new key
#
# Addresses (fixed; each node on its own loopback address):
#   serve nodes      http://127.0.0.{1,2,3}:8080   clients, REST, /api/health, /readyz, /metrics
#                    127.0.0.{1,2,3}:7000          cluster gRPC (Raft, store, fan-out)
#   with --stores:
#     gateways       http://127.0.0.{1,2}:8080     clients, REST, /api/health, /readyz, /metrics
#                    127.0.0.{1,2}:7001            fan-out gRPC between the gateways
#     store voters   http://127.0.0.{1,2,3}:8081   /api/health, /readyz, /metrics only
#                    127.0.0.{1,2,3}:7000          Raft and store gRPC
# On macOS only 127.0.0.1 exists by default: `sudo ifconfig lo0 alias 127.0.0.2 up` (and .3).
#
# Everything lives in ./local-cluster/ at the repository root: each node's data dir, the logs of
# the last run (logs/<node>.log), access-key (generated once and kept, so the connection string
# stays valid across runs) and connection-string. Nodes keep their Raft state across runs; the
# mode (serve or --stores) is fixed when the directory is first used, --clean starts over.
#
# The binary: $SWITCHBOARD_BIN, default ./target/release/switchboard, built with
# `cargo build --release --bin switchboard` when that default is missing.
#
# Once every node's /readyz answers 200 the script prints the client endpoints and the
# connection string, then waits. If a node dies, it stops the others and exits non-zero.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

MODE=serve
CLEAN=0
for arg in "$@"; do
    case "$arg" in
        --stores) MODE=stores ;;
        --clean) CLEAN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "local-cluster.sh: unknown argument $arg (see --help)" >&2; exit 64 ;;
    esac
done

# A relative SWITCHBOARD_BIN is relative to where the script was started.
if [ -n "${SWITCHBOARD_BIN:-}" ] && [[ "$SWITCHBOARD_BIN" == */* ]] && [[ "$SWITCHBOARD_BIN" != /* ]]; then
    SWITCHBOARD_BIN="$PWD/$SWITCHBOARD_BIN"
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/local-cluster

if [ -z "${SWITCHBOARD_BIN:-}" ]; then
    BIN=$ROOT/target/release/switchboard
    if [ ! -x "$BIN" ]; then
        echo "==> building $BIN (cargo build --release --bin switchboard)"
        cargo build --release --bin switchboard
    fi
else
    BIN=$SWITCHBOARD_BIN
fi
if ! command -v "$BIN" >/dev/null 2>&1; then
    echo "local-cluster.sh: $BIN is not an executable" >&2
    exit 1
fi
command -v curl >/dev/null 2>&1 || { echo "local-cluster.sh: needs curl" >&2; exit 1; }

# One cluster per directory.
if [ -f "$DIR/running.pid" ] && kill -0 "$(cat "$DIR/running.pid")" 2>/dev/null; then
    echo "local-cluster.sh: a local cluster is already running (pid $(cat "$DIR/running.pid"))" >&2
    exit 1
fi
if [ "$CLEAN" = 1 ]; then
    echo "==> wiping $DIR"
    rm -rf "$DIR"
fi
mkdir -p "$DIR/logs"
printf '*\n' >"$DIR/.gitignore" # keep the cluster's state out of git
if [ -f "$DIR/mode" ] && [ "$(cat "$DIR/mode")" != "$MODE" ]; then
    echo "local-cluster.sh: $DIR holds a '$(cat "$DIR/mode")' cluster; run with --clean to start a '$MODE' one" >&2
    exit 1
fi
echo "$MODE" >"$DIR/mode"
echo $$ >"$DIR/running.pid"

if [ ! -s "$DIR/access-key" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/access-key")
fi
ACCESS_KEY=$(cat "$DIR/access-key")
PEERS=1=127.0.0.1:7000,2=127.0.0.2:7000,3=127.0.0.3:7000
STORE=127.0.0.1:7000,127.0.0.2:7000,127.0.0.3:7000

# Each node: name, pid, its readiness URL, and whether it holds clients (stopped first).
NAMES=()
PIDS=()
READY_URLS=()
CLIENT_ENDPOINTS=()
FRONT_PIDS=()
BACK_PIDS=()

in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# start NAME FRONT(1: holds clients) HTTP_ADDR CLUSTER_ADDR COMMAND ARGS... The access key goes
# through the environment, not the command line, so that `ps` does not show it.
start() {
    local name=$1 front=$2 http=$3
    shift 4
    # Job control on while starting: the node gets its own process group, so a Ctrl-C in the
    # terminal reaches only this script, which then stops the nodes in order.
    set -m
    if [ "$front" = 1 ]; then
        SWITCHBOARD_ACCESS_KEY=$ACCESS_KEY SWITCHBOARD_LOG_FORMAT=text "$BIN" "$@" >"$DIR/logs/$name.log" 2>&1 &
    else
        SWITCHBOARD_LOG_FORMAT=text "$BIN" "$@" >"$DIR/logs/$name.log" 2>&1 &
    fi
    local pid=$!
    set +m
    NAMES+=("$name")
    PIDS+=("$pid")
    READY_URLS+=("http://$http/readyz")
    if [ "$front" = 1 ]; then
        FRONT_PIDS+=("$pid")
        CLIENT_ENDPOINTS+=("http://$http")
    else
        BACK_PIDS+=("$pid")
    fi
}

# Sends SIGTERM to the given pids and waits up to 30 s for them, then SIGKILL.
terminate() {
    local pid
    [ $# -gt 0 ] || return 0
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + 30))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "    pid $pid did not stop within 30 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

STOPPING=0
stop_all() {
    [ "$STOPPING" = 0 ] || return 0
    STOPPING=1
    trap - INT TERM
    echo
    echo "==> stopping: SIGTERM to ${#FRONT_PIDS[@]} client-facing node(s), then ${#BACK_PIDS[@]} store voter(s)"
    terminate "${FRONT_PIDS[@]+"${FRONT_PIDS[@]}"}"
    terminate "${BACK_PIDS[@]+"${BACK_PIDS[@]}"}"
    rm -f "$DIR/running.pid"
    echo "==> stopped (data and logs kept in $DIR)"
}
trap 'stop_all; exit 0' INT TERM

tail_log() {
    echo "---- last lines of $DIR/logs/$1.log" >&2
    tail -n 20 "$DIR/logs/$1.log" >&2 || true
}

if [ "$MODE" = serve ]; then
    ADDRESSES=(127.0.0.{1,2,3}:8080 127.0.0.{1,2,3}:7000)
else
    ADDRESSES=(127.0.0.{1,2}:8080 127.0.0.{1,2}:7001 127.0.0.{1,2,3}:8081 127.0.0.{1,2,3}:7000)
fi
for addr in "${ADDRESSES[@]}"; do
    if in_use "${addr%:*}" "${addr##*:}"; then
        echo "local-cluster.sh: $addr is already in use (another local cluster, or switchboard serve?)" >&2
        rm -f "$DIR/running.pid"
        exit 1
    fi
done

if [ "$MODE" = serve ]; then
    echo "==> starting 3 serve nodes (gateway + store voter) with $BIN"
    for i in 1 2 3; do
        # --advertise defaults to this node's --peers entry.
        start "node-$i" 1 "127.0.0.$i:8080" "127.0.0.$i:7000" serve --node-id "$i" \
            --listen "127.0.0.$i:8080" --cluster-listen "127.0.0.$i:7000" --peers "$PEERS" \
            --data-dir "$DIR/node-$i"
    done
else
    echo "==> starting 3 store voters and 2 gateways with $BIN"
    for i in 1 2 3; do
        start "store-$i" 0 "127.0.0.$i:8081" "127.0.0.$i:7000" store --node-id "$i" \
            --listen "127.0.0.$i:8081" --cluster-listen "127.0.0.$i:7000" --peers "$PEERS" \
            --data-dir "$DIR/store-$i"
    done
    for i in 1 2; do
        # A random node id per process (no --node-id); --advertise defaults to --cluster-listen.
        start "gateway-$i" 1 "127.0.0.$i:8080" "127.0.0.$i:7001" gateway \
            --listen "127.0.0.$i:8080" --cluster-listen "127.0.0.$i:7001" --store "$STORE"
    done
fi

# A node that exits is a failure: say which and why, stop the rest.
check_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            echo "local-cluster.sh: ${NAMES[$i]} exited" >&2
            tail_log "${NAMES[$i]}"
            stop_all
            exit 1
        fi
    done
}

echo "==> waiting until every node's /readyz answers 200"
deadline=$((SECONDS + 120))
for i in "${!PIDS[@]}"; do
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${READY_URLS[$i]}")" = 200 ]; do
        check_alive
        if [ $SECONDS -ge $deadline ]; then
            echo "local-cluster.sh: ${NAMES[$i]} is not ready after 120 s (${READY_URLS[$i]})" >&2
            tail_log "${NAMES[$i]}"
            stop_all
            exit 1
        fi
        sleep 0.3 &
        wait $!
    done
    echo "    ${NAMES[$i]} ready (${READY_URLS[$i]%/readyz})"
done

CS="Endpoint=${CLIENT_ENDPOINTS[0]};AccessKey=$ACCESS_KEY;Version=1.0;"
(umask 077 && printf '%s\n' "$CS" >"$DIR/connection-string")
cat <<EOF

Switchboard local cluster ($MODE mode) is ready.

Client endpoints (any of them; a client token works on every one):
$(printf '  %s\n' "${CLIENT_ENDPOINTS[@]}")

Connection string (also in local-cluster/connection-string; swap the Endpoint for another node):
  $CS

Try it:
  CS=\$(cat local-cluster/connection-string)
  node examples/listen.mjs "\$($BIN token --connection-string "\$CS" --hub chat --only url)" \\
                           "\$($BIN token --connection-string "\$CS" --hub chat --only token)"
  URL=${CLIENT_ENDPOINTS[${#CLIENT_ENDPOINTS[@]}-1]}/api/hubs/chat/:send?api-version=2022-06-01
  curl -i -X POST "\$URL" -H "Authorization: Bearer \$($BIN token --connection-string "\$CS" --rest "\$URL" --only token)" \\
       -H 'Content-Type: application/json' -d '{"target":"message","arguments":["hello"]}'

Logs: local-cluster/logs/*.log    Metrics: <endpoint>/metrics    Ctrl-C stops the cluster.
EOF

while :; do
    check_alive
    sleep 1 &
    wait $!
done
