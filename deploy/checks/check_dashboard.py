"""Static checks of the Grafana dashboard (helm/switchboard/dashboards/switchboard-dashboard.json,
also reached through deploy/grafana/):

- the JSON parses and has the variables `datasource` (Prometheus), `job` and `instance`;
- every panel queries `${datasource}`, panel ids are unique, the grid has no overlaps;
- every expression parses (promtool), refers only to exported metrics (metric_names.txt),
  uses histograms through `_bucket` with `le` kept, and uses only defined variables;
- together the panels cover every exported metric and the topics the dashboard promises.
"""

from __future__ import annotations

import json
import re

from common import DASHBOARD, DEPLOY, Failures, load_metrics, promtool_check_exprs, referenced_series, series_names

GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
# Topics the issue asks the dashboard to show: (what, a regex that some panel title must match).
TOPICS = [
    ("connections gauge", r"^Connections$"),
    ("connections opened/closed by reason", r"opened / closed by reason"),
    ("messages in/out", r"Messages in / out"),
    ("bytes in/out", r"Bytes in / out"),
    ("fan-out latency p50/p99", r"Fan-out latency p50 / p99"),
    ("queue drops and slow consumers", r"drops and slow consumers"),
    ("REST requests by route/status", r"Requests by route and status"),
    ("REST 4xx/5xx rate", r"4xx / 5xx"),
    ("REST latency p99", r"REST latency p99"),
    ("Raft leader", r"Leader"),
    ("Raft term", r"[Tt]erm"),
    ("Raft commit lag", r"Commit lag"),
    ("store write batch size", r"Write batch size"),
    ("store write latency", r"Write latency"),
    ("peer stream state", r"Peer streams"),
    ("gateways' store watch state", r"^Store watch$"),
    ("upstream requests by category and outcome", r"^Upstream requests by category and outcome$"),
    ("upstream failures by reason", r"^Upstream failures by reason$"),
    ("upstream latency p50/p99 by category", r"^Upstream latency p50 / p99 by category$"),
    ("upstream calls in flight", r"^Upstream calls in flight$"),
    ("upstream throttled connections", r"^Upstream throttled"),
]


def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))


def main() -> None:
    f = Failures("dashboard")
    link = DEPLOY / "grafana" / "switchboard-dashboard.json"
    f.check(link.is_symlink() and link.resolve() == DASHBOARD.resolve(),
            "deploy/grafana/switchboard-dashboard.json must be a symlink to the chart's copy")
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        f.fail(f"dashboard JSON does not parse: {e}")
        f.finish()
        return

    metrics = load_metrics()
    series = series_names(metrics)
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        f.check(key in dash, f"dashboard has no '{key}'")
    f.check("__inputs" not in dash,
            "dashboard must not use __inputs (Grafana's sidecar does not resolve ${DS_...} inputs)")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    f.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "variable 'datasource' must be a Prometheus data source variable")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not f.check(v is not None and v.get("type") == "query", f"variable '{name}' missing or not a query"):
            continue
        f.check(v.get("datasource", {}).get("uid") == "${datasource}",
                f"variable '{name}' must query ${{datasource}}")
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        if f.check(m is not None and m.group(2) == name, f"variable '{name}' must be label_values(..., {name})"):
            used = referenced_series(m.group(1))
            f.check(bool(used), f"variable '{name}' names no metric")
            for s in sorted(used - set(series)):
                f.fail(f"variable '{name}' refers to unknown metric {s}")

    ids: dict[int, str] = {}
    cells: dict[tuple[int, int], str] = {}
    exprs: dict[str, str] = {}
    covered: set[str] = set()
    titles: list[str] = []
    for p in walk(dash.get("panels", [])):
        title = p.get("title", "?")
        titles.append(title)
        pid = p.get("id")
        f.check(isinstance(pid, int) and pid not in ids, f"panel '{title}': id {pid} missing or not unique")
        ids[pid] = title
        g = p.get("gridPos", {})
        if f.check(all(isinstance(g.get(k), int) for k in "hwxy"), f"panel '{title}': bad gridPos"):
            f.check(0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel '{title}': wider than the grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    other = cells.get((x, y))
                    if other is not None:
                        f.fail(f"panel '{title}' overlaps '{other}' at ({x},{y})")
                        break
                    cells[(x, y)] = title
        if p.get("type") == "row":
            continue
        f.check(p.get("datasource", {}).get("uid") == "${datasource}", f"panel '{title}' must use ${{datasource}}")
        targets = p.get("targets", [])
        f.check(bool(targets), f"panel '{title}' has no query")
        for t in targets:
            expr = t.get("expr", "")
            label = f"panel '{title}' query {t.get('refId')}"
            f.check(t.get("datasource", {}).get("uid") == "${datasource}", f"{label} must use ${{datasource}}")
            used = referenced_series(expr)
            f.check(bool(used), f"{label} references no metric: {expr}")
            for s in sorted(used):
                if f.check(s in series, f"{label} refers to {s}, which Switchboard does not export"):
                    covered.add(series[s])
            for var in re.findall(r"\$\{?(\w+)", expr):
                f.check(var in variables or var in GRAFANA_BUILTINS, f"{label} uses undefined variable ${var}")
            for sel in (f"job=~\"$job\"", f"instance=~\"$instance\""):
                f.check(sel in expr, f"{label} does not filter by {sel}")
            if "histogram_quantile" in expr:
                f.check(all(s.endswith("_bucket") for s in used), f"{label}: histogram_quantile over non-bucket series")
                f.check(re.search(r"by \((\w+, )*le(, \w+)*\)", expr) is not None, f"{label}: histogram_quantile must keep 'le'")
            for s in used:
                if s in metrics and metrics[s] == "histogram":
                    f.fail(f"{label} uses histogram {s} without a _bucket/_sum/_count suffix")
            exprs[label] = (expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*"))

    for name in sorted(set(metrics) - covered):
        f.fail(f"no panel shows {name}")
    for what, pattern in TOPICS:
        f.check(any(re.search(pattern, t) for t in titles), f"no panel for {what} (title matching /{pattern}/)")
    promtool_check_exprs(exprs, f)
    f.finish()


if __name__ == "__main__":
    main()
