#!/usr/bin/env bash
# Runs the README's "Running a cluster" block as written (the lines between
# `<!-- cluster-block:start -->` and `<!-- cluster-block:end -->`) under `bash -euo pipefail`,
# from the repository root, with the debug binary and a temporary data directory, and checks
# that it prints the connection string, that the broadcast through node 2 is accepted (202) and
# that the listener on node 1 receives it. Every process the block starts is stopped, however it
# ends; the whole run is bounded (60 s).
#
#   tests/readme_cluster.sh
#
# SWITCHBOARD_BIN   the binary the block runs as $BIN [${CARGO_TARGET_DIR:-./target}/debug/switchboard]
# Needs curl and Node.js; the block installs examples/node_modules with npm ci if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=60
BIN="${SWITCHBOARD_BIN:-${CARGO_TARGET_DIR:-./target}/debug/switchboard}"
if [ ! -x "$BIN" ]; then
    echo "readme_cluster: no switchboard binary at $BIN: build it (cargo build --bin switchboard) or set SWITCHBOARD_BIN" >&2
    exit 1
fi
for tool in curl node awk setsid; do
    command -v "$tool" >/dev/null 2>&1 || { echo "readme_cluster: needs $tool" >&2; exit 1; }
done

work="$(mktemp -d)"
block="$work/block.sh"
awk '/<!-- cluster-block:start -->/ { inside = 1; next }
     /<!-- cluster-block:end -->/ { inside = 0 }
     inside && !/^```/ { print }' README.md >"$block"
# shellcheck disable=SC2016 # the block's own text, not an expansion
if ! grep -qF 'kill "${PIDS[@]}"' "$block"; then
    echo "readme_cluster: no cluster block (with its cleanup line) between the markers in README.md" >&2
    exit 1
fi

# The block's fixed ports must be free, or its nodes would not start.
for port in 8081 8082 8083 7001 7002 7003; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "readme_cluster: 127.0.0.1:$port is in use; the README block needs it" >&2
        exit 1
    fi
done

# The block runs in a session of its own, so that every process it starts can be stopped by
# the group's id, whatever happens to the block.
pgid=""
cleanup() {
    if [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null; then
        kill -TERM -- "-$pgid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 -- "-$pgid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> running the README's cluster block with BIN=$BIN"
BIN="$BIN" DATA="$work/data" setsid bash -euo pipefail "$block" >"$work/out.log" 2>&1 &
pgid=$!
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$pgid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
done
status=0
if kill -0 "$pgid" 2>/dev/null; then
    echo "readme_cluster: the block did not finish within $TIMEOUT s" >&2
    status=1
elif ! wait "$pgid"; then
    echo "readme_cluster: the block failed" >&2
    status=1
fi

fail() {
    echo "readme_cluster: $1" >&2
    status=1
}
grep -Eq '^Endpoint=http://127\.0\.0\.1:8081;AccessKey=[^;]+;Version=1\.0;$' "$work/out.log" \
    || fail "the block did not print the connection string"
for i in 1 2 3; do
    grep -q "^node $i ready$" "$work/out.log" || fail "node $i did not become ready"
done
grep -q '^HTTP/1.1 202' "$work/out.log" || fail "the broadcast through node 2 was not answered 202"
grep -q '^message: "hello from node 2"$' "$work/data/listener.log" 2>/dev/null \
    || fail "the listener on node 1 did not receive the broadcast"
if [ "$status" = 0 ] && kill -0 -- "-$pgid" 2>/dev/null; then
    fail "the block's cleanup line left processes running"
fi

if [ "$status" != 0 ]; then
    echo "--- output of the block" >&2
    cat "$work/out.log" >&2
    for log in "$work"/data/*.log; do
        [ -f "$log" ] || continue
        echo "--- $(basename "$log") (last lines)" >&2
        tail -n 20 "$log" >&2
    done
    exit 1
fi
echo "readme_cluster: the README's cluster block works: three nodes ready, the broadcast through node 2 accepted (202) and received on node 1"
