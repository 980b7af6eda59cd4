"""Checks of the alert rules beyond what promtool does (check.sh runs `promtool check rules` and
`promtool test rules` itself):

- the expected alerts exist, each with a severity, a summary, a description and a `for`;
- their expressions refer only to exported metrics (metric_names.txt) and `up`;
- the unit tests cover every alert both firing and staying silent.
"""

from __future__ import annotations

import yaml

from common import BUILTIN_SERIES, RULE_TESTS, RULES, Failures, load_metrics, referenced_series, series_names

EXPECTED = {
    "SwitchboardNoRaftLeader",
    "SwitchboardRaftCommitLag",
    "SwitchboardStoreDiskFailing",
    "SwitchboardRedisUnreachable",
    "SwitchboardHighDropRate",
    "SwitchboardGatewayDown",
    "SwitchboardHigh5xxRate",
    "SwitchboardPeerStreamDown",
    "SwitchboardGatewayStoreWatchDown",
    "SwitchboardClusterCallsRefused",
    "SwitchboardUpstreamFailing",
}


def main() -> None:
    f = Failures("rules")
    series = series_names(load_metrics())
    rules = yaml.safe_load(RULES.read_text())
    alerts = {}
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                f.check(rule["alert"] not in alerts, f"alert {rule['alert']} defined twice")
                alerts[rule["alert"]] = rule
    f.check(set(alerts) == EXPECTED, f"alerts {sorted(alerts)} differ from {sorted(EXPECTED)}")
    for name, rule in alerts.items():
        f.check(rule.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                f"{name}: severity label missing")
        for key in ("summary", "description"):
            f.check(bool(rule.get("annotations", {}).get(key)), f"{name}: annotation {key} missing")
        f.check(bool(rule.get("for")), f"{name}: no 'for' duration (alerts on one bad scrape)")
        used = referenced_series(rule["expr"])
        f.check(bool(used), f"{name}: expression references no metric")
        for s in sorted(used):
            f.check(s in series or s in BUILTIN_SERIES, f"{name}: refers to {s}, which Switchboard does not export")

    tests = yaml.safe_load(RULE_TESTS.read_text())
    f.check(tests.get("rule_files") == [RULES.name], f"{RULE_TESTS.name} must load {RULES.name}")
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests.get("tests", []):
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    for name in sorted(EXPECTED):
        f.check(name in fires, f"no unit test where {name} fires")
        f.check(name in silent, f"no unit test where {name} stays silent")
    f.finish()


if __name__ == "__main__":
    main()
