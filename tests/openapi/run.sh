#!/usr/bin/env bash
# Fuzzes the REST API against its own OpenAPI document with schemathesis (PyPI): a live
# `switchboard serve` with a fresh key, every operation of /api/openapi.json called with
# generated input and a token signed for its exact URL (hooks.py), and every answer checked:
# no 5xx, a documented status, content type, headers and body schema, and refused without a
# token. Exits non-zero on any failure.
#
#   tests/openapi/run.sh                        # the debug binary, a fixed seed
#   SWITCHBOARD_BIN=target/release/switchboard SCHEMATHESIS_SEED=random tests/openapi/run.sh
#
# One worker: with several, Python 3.11 can fail inside ast.parse (a CPython bug, not ours).
# schemathesis is installed (pinned) in a virtualenv outside the repository
# (SWITCHBOARD_CHECK_TOOLS, default ~/.cache/switchboard-deploy-check); only PyPI is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
BIN=${SWITCHBOARD_BIN:-target/debug/switchboard}
SEED=${SCHEMATHESIS_SEED:-20261201}
EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-15}
TOOLS_DIR=${SWITCHBOARD_CHECK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-deploy-check}
VENV="$TOOLS_DIR/schemathesis-$SCHEMATHESIS_VERSION"

if [ ! -x "$VENV/bin/schemathesis" ]; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SWITCHBOARD_ACCESS_KEY="$KEY" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "switchboard exited:" >&2; cat "$WORK/server.log" >&2; exit 1
    fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

SEED_FLAG=(--seed "$SEED")
[ "$SEED" = random ] && SEED_FLAG=()
status=0
(
    cd "$WORK"
    SWITCHBOARD_ACCESS_KEY="$KEY" SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$OLDPWD/tests/openapi" \
        "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/openapi.json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth \
        --phases examples,coverage,fuzzing \
        --max-examples "$EXAMPLES" "${SEED_FLAG[@]}" \
        --generation-database none \
        --workers 1 --no-color --warnings off
) || status=$?
if [ "$status" != 0 ]; then
    echo "schemathesis failed (exit $status); the server's log:" >&2
    tail -50 "$WORK/server.log" >&2
    exit "$status"
fi
# Not vacuous: the signed calls were let in (a signer that got every audience wrong would see
# only documented 401s, and pass).
ACCEPTED=$(curl -fsS "http://127.0.0.1:$PORT/metrics" | awk '
    /^switchboard_http_requests_total\{/ && /route="\/api\/(v1\/)?hubs/ && /status="2[0-9][0-9]"/ { n += $NF }
    END { printf "%d", n }')
if [ "${ACCEPTED:-0}" -lt 100 ]; then
    echo "only ${ACCEPTED:-0} REST calls were answered 2xx: the tokens hooks.py signs are not accepted" >&2
    exit 1
fi
echo "openapi: $ACCEPTED REST calls were answered 2xx"
# The server must have stayed up and logged no panic.
if ! kill -0 "$SERVER_PID" 2>/dev/null || grep -q "panicked" "$WORK/server.log"; then
    echo "switchboard died or panicked during the run:" >&2; tail -50 "$WORK/server.log" >&2; exit 1
fi
echo "openapi: every operation of /api/openapi.json answered as documented (seed $SEED)"
