"""Helpers shared by the static checks of deploy/ and helm/: the list of exported metrics, metric
names referenced by a PromQL expression, PromQL syntax checking with promtool, and failure
reporting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
ROOT = DEPLOY.parent
CHART = ROOT / "helm" / "switchboard"
DASHBOARD = CHART / "dashboards" / "switchboard-dashboard.json"
RULES = CHART / "rules" / "switchboard-alerts.yaml"
RULE_TESTS = CHART / "rules" / "switchboard-alerts.test.yaml"

# Series Prometheus itself creates for every target.
BUILTIN_SERIES = {"up"}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round",
    "scalar", "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
}
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}


class Failures:
    """Collects failures so that one run reports every problem, then exits non-zero."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[str] = []
        self.passed = 0

    def check(self, ok: bool, message: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.items.append(message)
        return ok

    def fail(self, message: str) -> None:
        self.items.append(message)

    def finish(self) -> None:
        for item in self.items:
            print(f"  FAIL [{self.name}] {item}")
        # Not in the "N passed, N failed" form: CI reads that line as a test runner's summary.
        if self.items:
            print(f"{self.name}: {len(self.items)} of {self.passed + len(self.items)} checks FAILED")
        else:
            print(f"{self.name}: all {self.passed} checks ok")
        sys.exit(1 if self.items else 0)


PROCESS_KINDS = ("serve", "serve-cluster", "gateway", "store")


@dataclass(frozen=True)
class Metric:
    """One line of metric_names.txt."""

    name: str
    kind: str  # counter, gauge or histogram
    processes: frozenset[str]  # PROCESS_KINDS; "serve" covers serve-cluster too
    on_event: bool  # the series appears only once what it counts happens
    with_upstream: bool = False  # exported only by processes with an upstream configured
    with_redis: bool = False  # exported only by gateways on the Redis engine (--redis)

    def exported_by(self, process: str) -> bool:
        return process in self.processes or (process == "serve-cluster" and "serve" in self.processes)


def load_metric_table() -> dict[str, Metric]:
    """Every line of checks/metric_names.txt: `name type processes [on-event|with-upstream|with-redis]`."""
    metrics: dict[str, Metric] = {}
    for n, line in enumerate((DEPLOY / "checks" / "metric_names.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (3, 4) or parts[1] not in ("counter", "gauge", "histogram") \
                or (len(parts) == 4 and parts[3] not in ("on-event", "with-upstream", "with-redis")):
            raise ValueError(f"metric_names.txt line {n}: expected `name type processes [on-event|with-upstream|with-redis]`: {line}")
        processes = frozenset(parts[2].split(","))
        if not processes <= set(PROCESS_KINDS):
            raise ValueError(f"metric_names.txt line {n}: unknown process in {parts[2]}")
        condition = parts[3] if len(parts) == 4 else ""
        metrics[parts[0]] = Metric(parts[0], parts[1], processes, condition == "on-event",
                                   condition == "with-upstream", condition == "with-redis")
    return metrics


def load_metrics() -> dict[str, str]:
    """name -> type, from checks/metric_names.txt."""
    return {name: m.kind for name, m in load_metric_table().items()}


def series_names(metrics: dict[str, str]) -> dict[str, str]:
    """Every series name a query may use -> the metric it belongs to (histograms expand to
    _bucket, _sum and _count)."""
    names: dict[str, str] = {}
    for name, kind in metrics.items():
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[name + suffix] = name
        else:
            names[name] = name
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def referenced_series(expr: str) -> set[str]:
    """Series names a PromQL expression selects: bare metric names and `__name__` matchers
    (alternatives of a regex matcher split on `|`)."""
    found: set[str] = set()
    for m in _NAME_MATCHER.finditer(expr):
        found.update(part for part in m.group(1).split("|") if part)
    # Strings first (label values may hold braces, e.g. route="/api/hubs/{hub}/:send").
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for m in _IDENT.finditer(text):
        ident, call = m.group(1), m.group(2)
        if call:
            continue  # a function or aggregation
        if ident in PROMQL_KEYWORDS or ident in PROMQL_FUNCTIONS:
            continue
        found.add(ident)
    return found


def promtool_check_exprs(exprs: dict[str, str], failures: Failures) -> None:
    """Checks the PromQL syntax of `exprs` (label -> expression) with `promtool check rules`, as
    recording rules of a temporary rule file."""
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs.values())]
    labels = list(exprs.keys())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exprs.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}, f)
        proc = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        if proc.returncode == 0:
            failures.check(True, "")
            return
        out = proc.stdout + proc.stderr
        for i, label in enumerate(labels):
            if f'"check:expr_{i}"' in out:
                failures.fail(f"PromQL syntax error in {label}")
        failures.fail(f"promtool check rules rejected the expressions:\n{out}")
