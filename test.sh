#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests, and the end-to-end tests that
# start real switchboard processes and drive them with the official SignalR JS client.
# Needs: a Rust toolchain (cargo-nextest if available), Node.js with npm; installs (as root, from
# Debian) promtool, chromium, redis-server and redis-sentinel when missing.
set -euo pipefail
cd "$(dirname "$0")"

# The metrics test checks /metrics with promtool (Debian package `prometheus`).
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing promtool (Debian package prometheus)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends prometheus >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    else
        echo "warning: promtool is missing (apt-get install prometheus); the metrics test will fail" >&2
    fi
fi

# The Redis engine's tests start real redis-server and redis-sentinel processes (Debian packages
# `redis-server` and `redis-sentinel`).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-sentinel >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing redis-server and redis-sentinel (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends redis-server redis-sentinel >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends redis-server redis-sentinel >/dev/null; }
    else
        echo "warning: redis-server or redis-sentinel is missing (apt-get install redis-server redis-sentinel); the Redis engine tests will fail" >&2
    fi
fi

# The sample chat test drives the system's Chromium (Debian package `chromium`) with playwright-core.
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing chromium (Debian package chromium)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends chromium >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    else
        echo "warning: chromium is missing (apt-get install chromium); the browser test will fail" >&2
    fi
fi

echo "==> installing the official SignalR JS clients, the examples' packages and playwright-core"
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
npm ci --prefix examples --no-audit --no-fund --loglevel=error
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

echo "==> building"
cargo build --workspace --all-targets --locked

echo "==> the README's cluster block, as written (three serve nodes, a listener, a broadcast)"
tests/readme_cluster.sh

echo "==> schemathesis: the REST API against its OpenAPI document (installs schemathesis from PyPI)"
tests/openapi/run.sh

echo "==> k6 smoke run of the load-test scenarios against a real server"
loadtest/k6/smoke.sh

echo "==> testing"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked
    cargo test --workspace --doc --locked
else
    cargo test --workspace --locked
fi
