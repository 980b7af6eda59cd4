"""Checks of the Helm chart helm/switchboard, with Helm's own engine (Helm v4 through the
helm-python-sdk bindings: no helm binary, no cluster):

- static: Chart.yaml, every value in values.yaml documented by a comment, every `.Values.x`
  a template uses exists in values.yaml and every value is used by some template;
- `helm lint --strict` for each scenario below;
- rendering each scenario: every manifest is valid YAML and valid against the Kubernetes 1.30
  OpenAPI schemas (kubernetes-validate, strict: unknown fields rejected), plus the chart's own
  contract: names, the pods' command lines (peers from stable DNS names, store addresses),
  probes, shutdown timing, security context, Services and their selectors and named ports, PDBs,
  HPA, Secret or existingSecret, ServiceMonitor, PrometheusRule and dashboard ConfigMap (the same
  content as the files), NOTES.txt; the cluster plane: the NetworkPolicy (evaluated for the
  release's own pods, another release's, the same labels in another namespace and an outside
  address: only the release's pods reach the cluster ports), the cluster key, mutual TLS and
  public TLS (every variable naming a file that the pod's read-only Secret mount projects, no
  subPath); the upstream (its templates rendered into a Secret, or an existing one, mounted
  read-only and named by --upstream-config on gateways and serve nodes only, the timeout, the
  restart on change); no key, nor upstream URL, in any manifest but its Secret, nor on any
  command line;
- values the chart must refuse fail to render with a clear message.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

from common import CHART, DASHBOARD, RULES, Failures

KUBE_VERSION = "1.30.0"
CRD_GROUPS = ("monitoring.coreos.com/",)


@dataclass
class Scenario:
    name: str
    values: dict[str, Any] | None
    release: str = "switchboard"
    namespace: str = "default"
    expect: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario("cluster (defaults)", None),
    Scenario(
        "cluster (monitoring, existing secret, fixed gateways, no persistence)",
        {
            "accessKey": {"existingSecret": "my-keys", "secretKey": "keys"},
            "gateway": {"autoscaling": {"enabled": False}, "replicas": 4, "extraArgs": ["--example"],
                        "podAnnotations": {"a": "b"}},
            "store": {"persistence": {"enabled": False}, "replicas": 5, "snapshotKeepLogs": 50},
            "connections": {"lease": 5},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "dashboard": {"annotations": {"grafana_folder": "Switchboard"}},
            "service": {"type": "LoadBalancer", "nodePort": 30080, "externalTrafficPolicy": "Local",
                        "loadBalancerSourceRanges": ["10.0.0.0/8"]},
            "imagePullSecrets": [{"name": "regcred"}],
            "logFilter": "info,switchboard_gateway=debug",
            "admin": {"enabled": True},
            "image": {"tag": "1.2.3"},
            "shutdown": {"preStopSleepSeconds": 10, "shutdownGraceSeconds": 20,
                         "terminationGracePeriodSeconds": 45},
        },
        release="chat",
        namespace="prod",
    ),
    Scenario("allInOne (3 serve nodes, monitoring)",
             {"mode": "allInOne", "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
              "accessKey": {"value": "key-one,key-two"}},
             release="sb"),
    Scenario("allInOne (1 serve node)", {"mode": "allInOne", "allInOne": {"replicas": 1}}, release="switchboard-dev"),
    Scenario("cluster scaled up from 3 to 5 voters", {"store": {"initialReplicas": 3, "replicas": 5}},
             release="grown"),
    Scenario(
        "cluster (cluster key, cluster mTLS, public TLS, HTTP peers, connection limits)",
        {
            "accessKey": {"value": "access-one,access-two"},
            "clusterKey": {"value": "cluster-new, cluster-old"},
            "clusterTLS": {"enabled": True, "secretName": "sb-cluster-tls"},
            "tls": {"enabled": True, "secretName": "sb-public-tls"},
            "service": {"port": 443},
            "serviceMonitor": {"enabled": True},
            "networkPolicy": {"httpFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
            ]},
            "connections": {"maxConnections": 20000, "connectionTokenLifetime": 8},
            "http": {"headerTimeout": 5, "idleTimeout": 75},
            "ports": {"cluster": 7100, "gatewayCluster": 7101},
        },
        release="secure",
        namespace="signalr",
    ),
    Scenario(
        "allInOne (existing cluster key, cluster mTLS, public TLS, ServiceMonitor tlsConfig)",
        {
            "mode": "allInOne",
            "clusterKey": {"existingSecret": "my-cluster-keys", "secretKey": "keys"},
            "clusterTLS": {"enabled": True, "secretName": "cluster-tls"},
            "tls": {"enabled": True, "secretName": "public-tls"},
            "serviceMonitor": {"enabled": True, "tlsConfig": {
                "serverName": "switchboard.example.com",
                "ca": {"secret": {"name": "public-tls", "key": "ca.crt"}}}},
        },
        release="sb",
    ),
    Scenario(
        "cluster (upstream templates, a key in a URL)",
        {"upstream": {"templates": [
            {"urlTemplate": "https://functions.example.com/runtime/webhooks/signalr?code=fn-key-0123456789abcdef&x=1",
             "hubPattern": "chat,news", "categoryPattern": "*", "eventPattern": "*"},
            {"urlTemplate": "http://app.upstream.svc.cluster.local/api/{hub}/{category}/{event}",
             "categoryPattern": "messages", "auth": {"type": "None"}},
        ], "timeout": 12}},
        release="up",
        namespace="signalr",
    ),
    Scenario(
        "allInOne (upstream from an existing Secret, templates ignored)",
        {"mode": "allInOne",
         "upstream": {"existingSecret": "my-upstream", "secretKey": "config.json", "timeout": 5,
                      "templates": [{"urlTemplate": "https://ignored.example.com/?code=ignored-key-42"}]}},
        release="sb",
    ),
    Scenario("allInOne (1 serve node, upstream templates)",
             {"mode": "allInOne", "allInOne": {"replicas": 1},
              "upstream": {"templates": [{"urlTemplate": "http://app:8080/{event}?code=one-node-key-77"}]}},
             release="one"),
    Scenario("allInOne (no NetworkPolicy)", {"mode": "allInOne", "networkPolicy": {"enabled": False}}),
    Scenario("cluster (no NetworkPolicy)", {"networkPolicy": {"enabled": False}}),
    Scenario("cluster on Redis (URL in a chart Secret)",
             {"engine": "redis", "redis": {"url": "redis://:redis-pass-0123@redis.data.svc:6379/0", "prefix": "chat"}},
             release="onredis"),
    Scenario("cluster on Redis (existing Secret)",
             {"engine": "redis", "redis": {"existingSecret": "my-redis", "secretKey": "REDIS_URL"}},
             release="onredis"),
]

INVALID = [
    ({"mode": "bogus"}, "mode must be"),
    ({"engine": "etcd"}, "engine must be"),
    ({"engine": "redis"}, "engine: redis needs redis.url or redis.existingSecret"),
    ({"engine": "redis", "mode": "allInOne", "redis": {"url": "redis://r:6379"}}, "engine: redis needs mode: cluster"),
    ({"shutdown": {"terminationGracePeriodSeconds": 15}}, "must exceed preStopSleepSeconds + shutdownGraceSeconds"),
    ({"store": {"replicas": 0}}, "must be at least 1"),
    ({"mode": "allInOne", "allInOne": {"replicas": 0}}, "must be at least 1"),
    ({"gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas must not exceed maxReplicas"),
    ({"logFormat": "xml"}, "logFormat must be"),
    ({"connections": {"lease": 2}}, "connections.lease must be at least 3 seconds"),
    ({"store": {"snapshotEvery": 0}}, "snapshotEvery must be at least 1"),
    ({"clusterTLS": {"enabled": True}}, "clusterTLS.secretName (a Secret with tls.crt, tls.key and ca.crt) is required"),
    ({"tls": {"enabled": True}}, "tls.secretName (a Secret with tls.crt and tls.key) is required"),
    ({"connections": {"connectionTokenLifetime": 0}}, "connections.connectionTokenLifetime must be at least 1 second"),
    ({"connections": {"maxConnections": -1}}, "connections.maxConnections must be empty"),
    ({"http": {"headerTimeout": 0}}, "http.headerTimeout and http.idleTimeout must be at least 1 second"),
    ({"http": {"idleTimeout": 0}}, "http.headerTimeout and http.idleTimeout must be at least 1 second"),
    ({"ports": {"gatewayCluster": 8080}}, "ports.http, ports.cluster and ports.gatewayCluster must differ"),
    ({"mode": "allInOne", "ports": {"cluster": 8080}}, "ports.http, ports.cluster and ports.gatewayCluster must differ"),
    ({"clusterKey": {"value": " , "}}, "clusterKey.value holds no key"),
    ({"upstream": {"timeout": 0}}, "upstream.timeout must be at least 1 second"),
    ({"upstream": {"templates": "http://a/"}}, "upstream.templates must be a list"),
    ({"upstream": {"templates": ["http://a/"]}}, "upstream.templates[0] must be a map with urlTemplate"),
    ({"upstream": {"templates": [{"hubPattern": "chat"}]}}, "upstream.templates[0].urlTemplate must be an http:// or https:// URL"),
    ({"upstream": {"templates": [{"urlTemplate": "http://a/"}, {"urlTemplate": "ftp://b/"}]}},
     "upstream.templates[1].urlTemplate must be an http:// or https:// URL"),
    ({"upstream": {"templates": [{"urlTemplate": "http://a/", "hubPatern": "chat"}]}}, 'unknown setting "hubPatern"'),
    ({"upstream": {"templates": [{"urlTemplate": "http://a/", "eventPattern": ""}]}},
     "upstream.templates[0].eventPattern must be a non-empty string"),
]

# values.yaml keys whose comment documents the whole object below them (Kubernetes structures
# passed through as they are) are recognised by a "# --" comment; their children need none.
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):(\s.*)?$")


def merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def fullname(release: str, values: dict) -> str:
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:40].rstrip("-")
    name = values.get("nameOverride") or "switchboard"
    full = release if name in release else f"{release}-{name}"
    return full[:40].rstrip("-")


# --------------------------------------------------------------------------------- static checks

def check_values_documented(f: Failures) -> None:
    """Every key in values.yaml has a comment right above it (or on its line), except the keys
    inside an object whose own comment starts with "# --" (the object is one documented value)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, children exempt)
    for i, line in enumerate(lines):
        m = _KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        exempt = bool(stack) and stack[-1][1]
        comment_block: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment_block.insert(0, lines[j].strip())
            j -= 1
        inline = "#" in (m.group(3) or "")
        documented = bool(comment_block) or inline
        if not exempt:
            f.check(documented, f"values.yaml line {i + 1}: '{m.group(2)}' has no comment")
        whole = exempt or any(c.startswith("# --") for c in comment_block[-1:])
        stack.append((indent, whole))


def template_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir()) if p.is_file()}


def leaf_paths(d: Any, prefix: str = "") -> list[str]:
    if isinstance(d, dict) and d:
        out: list[str] = []
        for k, v in d.items():
            out.extend(leaf_paths(v, f"{prefix}.{k}" if prefix else k))
        return out
    return [prefix]


def has_path(d: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def check_values_references(f: Failures, values: dict) -> None:
    """`.Values.a.b` (and `$alias.b` where `$alias := .Values.a`) exist in values.yaml, and every
    value in values.yaml is read by some template."""
    components = ["store", "gateway", "allInOne"]
    used: set[str] = set()
    for name, text in template_texts().items():
        aliases: dict[str, list[str]] = {}
        for m in re.finditer(r"\$(\w+)\s*:=\s*([^\n]*?)\}\}", text):
            alias, rhs = m.group(1), m.group(2)
            paths = re.findall(r"\.Values\.([A-Za-z0-9_.]+)", rhs)
            if paths:
                aliases[alias] = paths
            elif alias == "v" and "index . 1" in rhs:
                aliases[alias] = components  # the scheduling helper's component values
        for m in re.finditer(r"(?<![\w$])\$?\.Values\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)", text):
            path = m.group(1)
            f.check(has_path(values, path), f"templates/{name}: .Values.{path} is not in values.yaml")
            used.add(path)
        for m in re.finditer(r"\$(\w+)\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)", text):
            alias, rest = m.group(1), m.group(2)
            if alias not in aliases or alias in ("Values",):
                continue
            candidates = [f"{base}.{rest}" for base in aliases[alias]]
            f.check(any(has_path(values, c) for c in candidates),
                    f"templates/{name}: ${alias}.{rest} is in none of {aliases[alias]}")
            used.update(c for c in candidates if has_path(values, c))
    for leaf in leaf_paths(values):
        f.check(any(leaf == u or leaf.startswith(u + ".") for u in used),
                f"values.yaml: {leaf} is not used by any template")


def check_chart_yaml(f: Failures) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    f.check(chart.get("apiVersion") == "v2", "Chart.yaml apiVersion must be v2")
    f.check(chart.get("name") == "switchboard", "Chart.yaml name must be switchboard")
    f.check(re.fullmatch(r"\d+\.\d+\.\d+.*", str(chart.get("version", ""))) is not None, "Chart.yaml version must be SemVer")
    f.check(bool(chart.get("appVersion")), "Chart.yaml needs an appVersion (the default image tag)")


# ------------------------------------------------------------------------------- render checks

def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def arg_value(args: list[str], flag: str) -> str | None:
    if flag in args:
        i = args.index(flag)
        return args[i + 1] if i + 1 < len(args) else None
    return None


def pod_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_container_common(f: Failures, where: str, pod: dict, values: dict, clients: bool) -> None:
    """What every container shares; `clients`: it holds client connections (gateway, serve node)
    and gets the preStop sleep and the flags only those take."""
    c = pod["containers"][0]
    image = values["image"]
    f.check(c["image"] == f"{image['repository']}:{image['tag'] or '0.1.0'}", f"{where}: image {c['image']}")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    f.check(ports.get("http") == values["ports"]["http"], f"{where}: no http port {values['ports']['http']}")
    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    # With tls.enabled the HTTP port speaks only HTTPS, on store voters too.
    scheme = "HTTPS" if values["tls"]["enabled"] else "HTTP"
    for probe, path in (("livenessProbe", "/api/health"), ("readinessProbe", "/readyz"), ("startupProbe", "/api/health")):
        f.check(probes[probe] == {"path": path, "port": "http", "scheme": scheme},
                f"{where}: {probe} must GET {path} over {scheme}, got {probes[probe]}")
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    grace = env_map(c).get("SWITCHBOARD_SHUTDOWN_GRACE", {}).get("value")
    tgps = pod.get("terminationGracePeriodSeconds")
    f.check(tgps == values["shutdown"]["terminationGracePeriodSeconds"], f"{where}: terminationGracePeriodSeconds {tgps}")
    if not clients:
        # `switchboard store` takes no --shutdown-grace or --lease and serves no clients.
        f.check("lifecycle" not in c, f"{where}: a store voter needs no preStop sleep")
        for name in ("SWITCHBOARD_SHUTDOWN_GRACE", "SWITCHBOARD_LEASE"):
            f.check(name not in env_map(c), f"{where}: {name} is not a flag of `switchboard store`")
    elif f.check(isinstance(sleep, int) and grace is not None and isinstance(tgps, int),
                 f"{where}: preStop sleep, SWITCHBOARD_SHUTDOWN_GRACE and terminationGracePeriodSeconds must be set"):
        f.check(tgps > sleep + int(grace), f"{where}: terminationGracePeriodSeconds {tgps} <= preStop {sleep} + grace {grace}")
        f.check(sleep == values["shutdown"]["preStopSleepSeconds"] and int(grace) == values["shutdown"]["shutdownGraceSeconds"],
                f"{where}: shutdown values not applied")
    if clients:
        f.check(env_map(c).get("SWITCHBOARD_LEASE", {}).get("value") == str(values["connections"]["lease"]),
                f"{where}: SWITCHBOARD_LEASE must be connections.lease")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    f.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, f"{where}: pod must run as non-root uid 65532")
    f.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
            f"{where}: container must have a read-only root fs and no privilege escalation")
    f.check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: container must drop all capabilities")
    f.check(bool(c.get("resources", {}).get("requests")), f"{where}: no resource requests")
    f.check(pod.get("automountServiceAccountToken") is False, f"{where}: service account token must not be mounted")
    envs = env_map(c)
    f.check(envs.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
            f"{where}: POD_NAME must come from metadata.name")
    f.check(envs.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
            f"{where}: POD_IP must come from status.podIP")
    f.check(envs.get("SWITCHBOARD_LOG_FORMAT", {}).get("value") == values["logFormat"], f"{where}: log format not set")
    if values.get("logFilter"):
        f.check(envs.get("SWITCHBOARD_LOG", {}).get("value") == values["logFilter"], f"{where}: log filter not set")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    f.check("/tmp" in mounts, f"{where}: /tmp must be a writable volume (read-only root fs)")
    if values["imagePullSecrets"]:
        f.check(pod.get("imagePullSecrets") == values["imagePullSecrets"], f"{where}: imagePullSecrets not applied")


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    if not pod_matches(selector.get("matchLabels") or {}, labels):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in vals, "NotIn": labels.get(key) not in vals,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


@dataclass
class Source:
    """Where a connection comes from, for evaluating a NetworkPolicy: a pod (labels, namespace)
    or an address outside the cluster (ip)."""
    what: str
    labels: dict[str, str] | None = None
    namespace: str = ""
    ip: str = ""


def peer_admits(peer: dict, src: Source, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if not src.ip:
            return False  # pod IPs are not modelled: no ipBlock of the chart's own may admit pods
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        addr = ipaddress.ip_address(src.ip)
        return addr in net and not any(addr in ipaddress.ip_network(x) for x in peer["ipBlock"].get("except", []))
    if src.labels is None:
        return False
    if "namespaceSelector" in peer:
        ns_ok = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": src.namespace})
    else:
        ns_ok = src.namespace == policy_ns
    pod_ok = selects(peer["podSelector"], src.labels) if "podSelector" in peer else True
    return ns_ok and pod_ok


def policy_admits(np: dict, src: Source, target: dict, port: int) -> bool:
    """Whether the NetworkPolicy `np` lets `src` reach container port `port` of the pod template
    `target` (a policy that does not select the pod restricts nothing)."""
    spec = np["spec"]
    if not selects(spec["podSelector"], target["metadata"]["labels"]) or "Ingress" not in spec.get("policyTypes", ["Ingress"]):
        return True
    names = {p["containerPort"]: p["name"] for c in target["spec"]["containers"] for p in c.get("ports", [])}
    for rule in spec.get("ingress") or []:
        ports = rule.get("ports")
        port_ok = not ports or any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (port, names.get(port))
                                   for p in ports)
        peers = rule.get("from")
        if port_ok and (not peers or any(peer_admits(peer, src, np["metadata"]["namespace"]) for peer in peers)):
            return True
    return False


def check_network_policy(f: Failures, tag: str, np: dict, pods: dict[str, dict], values: dict, release: str,
                         namespace: str, all_in_one: bool) -> None:
    """Ingress only; every pod of the release selected; on the cluster ports, only the release's
    own pods admitted (not another release's, not the same labels elsewhere, not the outside);
    the HTTP port open to everyone, or to exactly the httpFrom peers."""
    spec = np["spec"]
    f.check(spec.get("policyTypes") == ["Ingress"], f"{tag} NetworkPolicy: policyTypes must be [Ingress] (egress is not restricted)")
    for rule in spec.get("ingress") or []:
        f.check(bool(rule.get("ports")), f"{tag} NetworkPolicy: a rule without ports opens every port: {rule}")
    http_port = values["ports"]["http"]
    own = [Source(f"pod {n}", tmpl["metadata"]["labels"], namespace) for n, tmpl in pods.items()]
    some = next(iter(pods.values()))["metadata"]["labels"]
    foreign = [
        Source("another release's pod", {**some, "app.kubernetes.io/instance": release + "-other"}, namespace),
        Source("an unrelated pod in the namespace", {"app": "something-else"}, namespace),
        Source("the release's labels in another namespace", dict(some), namespace + "-elsewhere"),
        Source("an address outside the cluster", ip="203.0.113.7"),
    ]
    for name, target in pods.items():
        f.check(selects(spec["podSelector"], target["metadata"]["labels"]), f"{tag} NetworkPolicy does not select {name}")
        c = target["spec"]["containers"][0]
        cluster_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "cluster")
        want = values["ports"]["gatewayCluster"] if target["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway" \
            else values["ports"]["cluster"]
        f.check(cluster_port == want, f"{tag} {name}: cluster port {cluster_port} != {want}")
        for src in own:
            f.check(policy_admits(np, src, target, cluster_port), f"{tag} NetworkPolicy: {src.what} cannot reach {name}:{cluster_port}")
            if not values["networkPolicy"]["httpFrom"]:
                f.check(policy_admits(np, src, target, http_port), f"{tag} NetworkPolicy: {src.what} cannot reach {name}:{http_port}")
        for src in foreign:
            f.check(not policy_admits(np, src, target, cluster_port), f"{tag} NetworkPolicy: {src.what} reaches {name}:{cluster_port}")
            if not values["networkPolicy"]["httpFrom"]:
                f.check(policy_admits(np, src, target, http_port), f"{tag} NetworkPolicy: {src.what} cannot reach {name}:{http_port}")
            else:
                f.check(not policy_admits(np, src, target, http_port), f"{tag} NetworkPolicy: {src.what} reaches {name}:{http_port} outside httpFrom")
        for peer in values["networkPolicy"]["httpFrom"]:
            ns = (peer.get("namespaceSelector", {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name", namespace)
            src = Source(f"httpFrom peer {peer}", dict((peer.get("podSelector") or {}).get("matchLabels") or {}), ns)
            f.check(policy_admits(np, src, target, http_port), f"{tag} NetworkPolicy: {src.what} cannot reach {name}:{http_port}")
            f.check(not policy_admits(np, src, target, cluster_port), f"{tag} NetworkPolicy: {src.what} reaches {name}:{cluster_port}")
    cluster_ports = {values["ports"]["cluster"]} | (set() if all_in_one else {values["ports"]["gatewayCluster"]})
    named = {p.get("port") for r in spec.get("ingress") or [] if r.get("from") for p in r.get("ports") or []}
    f.check(cluster_ports <= named, f"{tag} NetworkPolicy: cluster ports {sorted(cluster_ports)} not all in a rule with peers")


def mounted_file(f: Failures, where: str, pod: dict, path: str, secret: str, key: str) -> None:
    """`path` is a file of a read-only, whole-volume (no subPath, so Secret updates arrive) mount of
    Secret `secret` in the pod's first container, holding the Secret's `key`."""
    c = pod["containers"][0]
    mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if not f.check(mount is not None, f"{where}: {path} is in no volume mount"):
        return
    f.check(mount.get("readOnly") is True and "subPath" not in mount and "subPathExpr" not in mount,
            f"{where}: the mount of {path} must be read-only and without subPath (a subPath never sees an updated Secret)")
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})
    src = volume.get("secret", {})
    if not f.check(src.get("secretName") == secret, f"{where}: {path} must come from Secret {secret}, volume is {volume}"):
        return
    rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = src.get("items")
    projected = {i["path"]: i["key"] for i in items} if items else None
    f.check((projected or {}).get(rel) == key if items else rel == key,
            f"{where}: {path} is not Secret {secret}'s key {key} in the mount (items {items})")


def env_file(f: Failures, where: str, pod: dict, name: str, secret: str, key: str) -> None:
    e = env_map(pod["containers"][0]).get(name)
    if f.check(e is not None and isinstance(e.get("value"), str), f"{where}: {name} must be set to a file"):
        mounted_file(f, where, pod, e["value"], secret, key)


def check_pod_security(f: Failures, where: str, template: dict, values: dict, secret_name: str, cluster_key_secret: str,
                       clients: bool, chart_managed_cluster_key: bool) -> None:
    """The cluster key, mutual TLS, public TLS and the listener tunables of one pod template."""
    pod = template["spec"]
    c = pod["containers"][0]
    envs = env_map(c)
    check_access_key_env(f, where, c, values, secret_name)
    if cluster_key_secret:
        env_file(f, where, pod, "SWITCHBOARD_CLUSTER_KEY_FILE", cluster_key_secret, values["clusterKey"]["secretKey"])
    else:
        f.check("SWITCHBOARD_CLUSTER_KEY_FILE" not in envs, f"{where}: no clusterKey, yet SWITCHBOARD_CLUSTER_KEY_FILE is set")
    f.check("SWITCHBOARD_CLUSTER_KEY" not in envs, f"{where}: the cluster key goes through a file, not a variable")
    tls_names = ("SWITCHBOARD_CLUSTER_TLS_CERT", "SWITCHBOARD_CLUSTER_TLS_KEY", "SWITCHBOARD_CLUSTER_TLS_CA")
    if values["clusterTLS"]["enabled"]:
        for name, key in zip(tls_names, ("tls.crt", "tls.key", "ca.crt")):
            env_file(f, where, pod, name, values["clusterTLS"]["secretName"], key)
    else:
        f.check(not any(n in envs for n in tls_names), f"{where}: cluster TLS variables without clusterTLS.enabled")
    if values["tls"]["enabled"]:
        for name, key in (("SWITCHBOARD_TLS_CERT", "tls.crt"), ("SWITCHBOARD_TLS_KEY", "tls.key")):
            env_file(f, where, pod, name, values["tls"]["secretName"], key)
    else:
        f.check("SWITCHBOARD_TLS_CERT" not in envs and "SWITCHBOARD_TLS_KEY" not in envs, f"{where}: TLS variables without tls.enabled")
    f.check(envs.get("SWITCHBOARD_HTTP_HEADER_TIMEOUT", {}).get("value") == str(values["http"]["headerTimeout"]),
            f"{where}: SWITCHBOARD_HTTP_HEADER_TIMEOUT must be http.headerTimeout")
    f.check(envs.get("SWITCHBOARD_HTTP_IDLE_TIMEOUT", {}).get("value") == str(values["http"]["idleTimeout"]),
            f"{where}: SWITCHBOARD_HTTP_IDLE_TIMEOUT must be http.idleTimeout")
    if clients:
        f.check(envs.get("SWITCHBOARD_CONNECTION_TOKEN_LIFETIME", {}).get("value") == str(values["connections"]["connectionTokenLifetime"]),
                f"{where}: SWITCHBOARD_CONNECTION_TOKEN_LIFETIME must be connections.connectionTokenLifetime")
        limit = values["connections"]["maxConnections"]
        f.check(envs.get("SWITCHBOARD_MAX_CONNECTIONS", {}).get("value") == (str(limit) if limit else None),
                f"{where}: SWITCHBOARD_MAX_CONNECTIONS must be connections.maxConnections, and only when set")
    else:
        # `switchboard store` takes neither flag.
        for name in ("SWITCHBOARD_CONNECTION_TOKEN_LIFETIME", "SWITCHBOARD_MAX_CONNECTIONS"):
            f.check(name not in envs, f"{where}: {name} is not a flag of `switchboard store`")
    # Every volume of the pod is one of its mounts: nothing mounted that no container reads.
    mounted = {m["name"] for m in c.get("volumeMounts", [])}
    for v in pod.get("volumes", []):
        f.check(v["name"] in mounted, f"{where}: volume {v['name']} is not mounted")
    # The processes read their keys at start: a chart-managed key Secret that changes restarts them.
    annotations = template["metadata"].get("annotations") or {}
    f.check("checksum/access-key" in annotations, f"{where}: no checksum/access-key annotation (voters prove the key too)")
    f.check(("checksum/cluster-key" in annotations) == chart_managed_cluster_key,
            f"{where}: checksum/cluster-key annotation {'missing' if chart_managed_cluster_key else 'without a chart-managed cluster key'}")


UPSTREAM_FILE = "/etc/switchboard/upstream/upstream.json"


def check_upstream(f: Failures, where: str, template: dict, values: dict, upstream_secret: str, chart_managed: bool,
                   clients: bool) -> None:
    """The upstream of one pod template: processes that hold clients read the templates from the
    read-only mount of their Secret through --upstream-config and take the timeout; store voters
    get neither. The file is read at start: a chart-managed Secret restarts the pods on change."""
    pod = template["spec"]
    c = pod["containers"][0]
    args, envs = c["args"], env_map(c)
    annotations = template["metadata"].get("annotations") or {}
    for name in ("SWITCHBOARD_UPSTREAM", "SWITCHBOARD_UPSTREAM_CONFIG"):
        f.check(name not in envs, f"{where}: {name} is set (the upstream goes through --upstream-config only)")
    f.check(not any(re.match(r"--upstream(=|$)", a) for a in args), f"{where}: an upstream URL on the command line")
    if clients:
        f.check(envs.get("SWITCHBOARD_UPSTREAM_TIMEOUT", {}).get("value") == str(values["upstream"]["timeout"]),
                f"{where}: SWITCHBOARD_UPSTREAM_TIMEOUT must be upstream.timeout")
    else:
        f.check("SWITCHBOARD_UPSTREAM_TIMEOUT" not in envs, f"{where}: SWITCHBOARD_UPSTREAM_TIMEOUT is not a flag of `switchboard store`")
    admin = bool((values.get("admin") or {}).get("enabled"))
    if clients and admin:
        f.check(envs.get("SWITCHBOARD_ADMIN", {}).get("value") == "true",
                f"{where}: admin.enabled must set SWITCHBOARD_ADMIN=true")
    else:
        f.check("SWITCHBOARD_ADMIN" not in envs,
                f"{where}: SWITCHBOARD_ADMIN is set without admin.enabled, or on a store voter")
    if clients and upstream_secret:
        path = arg_value(args, "--upstream-config")
        if f.check(path == UPSTREAM_FILE and args.count("--upstream-config") == 1,
                   f"{where}: --upstream-config must be given once, as {UPSTREAM_FILE}, got {path}"):
            mounted_file(f, where, pod, path, upstream_secret, values["upstream"]["secretKey"])
    else:
        f.check("--upstream-config" not in args, f"{where}: --upstream-config without an upstream"
                + ("" if clients else " (store voters send no client events)"))
        f.check(not any(m["mountPath"].startswith(UPSTREAM_FILE.rsplit("/", 1)[0]) for m in c.get("volumeMounts", [])),
                f"{where}: the upstream Secret is mounted without being used")
    f.check(("checksum/upstream" in annotations) == (clients and chart_managed),
            f"{where}: checksum/upstream annotation {'missing' if clients and chart_managed else 'where no chart-managed upstream is read'}")


def check_no_keys_outside_secrets(f: Failures, tag: str, docs: list[dict], notes: str, key_secrets: set[str],
                                  values: dict, upstream_secret: str = "") -> None:
    """No key, access or cluster, and no upstream URL template (they carry keys such as
    `?code=...`), appears in any rendered manifest but the Secret holding it (so in no command
    line, variable value or annotation), nor in NOTES.txt; they reach the processes only through
    secretKeyRef or a mounted file."""
    keys: set[str] = set()
    for spec in (values["accessKey"]["value"], values["clusterKey"]["value"]):
        keys |= {k.strip() for k in (spec or "").split(",") if k.strip()}
    templates = values["upstream"]["templates"] or []
    keys |= {t["urlTemplate"] for t in templates if isinstance(t, dict) and t.get("urlTemplate")}
    keys |= {m.group(1) for t in templates if isinstance(t, dict)
             for m in re.finditer(r"[?&]code=([^&]+)", t.get("urlTemplate") or "")}
    for d in docs:
        if d["kind"] == "Secret" and d["metadata"]["name"] in key_secrets:
            for raw in (d.get("data") or {}).values():
                keys |= {k.strip() for k in re.split(r"[,\n]", base64.b64decode(raw).decode()) if k.strip()}
    if any(d["kind"] == "Secret" and d["metadata"]["name"] in key_secrets for d in docs):
        f.check(bool(keys), f"{tag} no key found in the chart's Secrets to look for")
    holders = key_secrets | ({upstream_secret} - {""})
    for d in docs:
        if d["kind"] == "Secret" and d["metadata"]["name"] in holders:
            continue
        text = json.dumps({k: v for k, v in d.items() if k != "_path"})
        for k in keys:
            f.check(k not in text, f"{tag} {d['kind']}/{d['metadata']['name']} contains a key")
        for tmpl in [d["spec"]["template"]] if d["kind"] in ("StatefulSet", "Deployment") else []:
            for c in tmpl["spec"]["containers"]:
                for a in c.get("args", []):
                    f.check(not re.match(r"--(access-key|cluster-key|upstream)(=|$)", a),
                            f"{tag} {d['metadata']['name']}: {a.split('=')[0]} on the command line")
                for e in c.get("env", []):
                    if e["name"] in ("SWITCHBOARD_ACCESS_KEY", "SWITCHBOARD_CLUSTER_KEY", "SWITCHBOARD_UPSTREAM"):
                        f.check("value" not in e, f"{tag} {d['metadata']['name']}: {e['name']} given as a literal value")
    for k in keys:
        f.check(k not in notes, f"{tag} NOTES.txt contains a key")


def check_access_key_env(f: Failures, where: str, container: dict, values: dict, secret_name: str) -> None:
    ref = env_map(container).get("SWITCHBOARD_ACCESS_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
    f.check(ref == {"name": secret_name, "key": values["accessKey"]["secretKey"]},
            f"{where}: SWITCHBOARD_ACCESS_KEY must come from secret {secret_name}/{values['accessKey']['secretKey']}, got {ref}")


def check_scenario(f: Failures, chart: helm.Chart, defaults: dict, s: Scenario) -> None:
    tag = f"[{s.name}]"
    values = merge(defaults, s.values)
    try:
        rendered = chart.render(s.values, name=s.release, namespace=s.namespace, is_install=True)
    except helm.HelmError as e:
        f.fail(f"{tag} render failed: {e}")
        return
    f.check(True, "")

    report = helm.lint(str(CHART), s.values, strict=True, namespace=s.namespace, kube_version=f"v{KUBE_VERSION}")
    for msg in report.get("messages", []):
        f.check(msg["severity"] < 2, f"{tag} helm lint: {msg['path']}: {msg['error']}")
    for err in report.get("errors", []):
        f.fail(f"{tag} helm lint error: {err}")

    docs: list[dict] = []
    notes = ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        try:
            parsed = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            f.fail(f"{tag} {path} is not valid YAML: {e}")
            continue
        for d in parsed:
            if not f.check(isinstance(d, dict) and {"apiVersion", "kind", "metadata"} <= d.keys(),
                           f"{tag} {path}: a document without apiVersion/kind/metadata"):
                continue
            d["_path"] = path
            docs.append(d)

    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        name = d["metadata"].get("name", "")
        f.check(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) is not None and len(name) <= 63,
                f"{tag} {d['kind']} name '{name}' is not a DNS label")
        f.check(name not in by_kind.get(d["kind"], {}), f"{tag} two {d['kind']}s named {name}")
        by_kind.setdefault(d["kind"], {})[name] = d
        f.check(d["metadata"].get("namespace") == (s.namespace if d["kind"] != "ConfigMap" or not values["dashboard"]["namespace"] else values["dashboard"]["namespace"]),
                f"{tag} {d['kind']}/{name} not in namespace {s.namespace}")
        body = {k: v for k, v in d.items() if k != "_path"}
        if not d["apiVersion"].startswith(CRD_GROUPS):
            try:
                kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
                f.check(True, "")
            except Exception as e:  # the library raises several error types
                f.fail(f"{tag} {d['kind']}/{name} is not a valid Kubernetes {KUBE_VERSION} object: {str(e).splitlines()[0]}")

    full = fullname(s.release, values)
    all_in_one = values["mode"] == "allInOne"
    voters_name = f"{full}-server" if all_in_one else f"{full}-store"
    headless = f"{voters_name}-headless"
    replicas = values["allInOne"]["replicas"] if all_in_one else values["store"]["replicas"]
    vvals = values["allInOne"] if all_in_one else values["store"]
    secret_name = values["accessKey"]["existingSecret"] or f"{full}-access-key"
    chart_cluster_key = bool(values["clusterKey"]["value"]) and not values["clusterKey"]["existingSecret"]
    cluster_key_secret = values["clusterKey"]["existingSecret"] or (f"{full}-cluster-key" if chart_cluster_key else "")
    cluster_port = values["ports"]["cluster"]
    scheme = "https" if values["tls"]["enabled"] else "http"
    chart_upstream = bool(values["upstream"]["templates"]) and not values["upstream"]["existingSecret"]
    upstream_secret = values["upstream"]["existingSecret"] or (f"{full}-upstream" if chart_upstream else "")

    on_redis = values["engine"] == "redis"
    chart_redis = on_redis and not values["redis"]["existingSecret"]
    redis_secret = values["redis"]["existingSecret"] or f"{full}-redis"
    expected = {("Service", full), ("ConfigMap", f"{full}-dashboard"), ("ServiceAccount", full)}
    if not on_redis:
        expected |= {("StatefulSet", voters_name), ("Service", headless)}
    if chart_redis:
        expected.add(("Secret", redis_secret))
    if not values["accessKey"]["existingSecret"]:
        expected.add(("Secret", secret_name))
    if chart_cluster_key:
        expected.add(("Secret", cluster_key_secret))
    if chart_upstream:
        expected.add(("Secret", upstream_secret))
    if values["networkPolicy"]["enabled"]:
        expected.add(("NetworkPolicy", full))
    if replicas > 1 and not on_redis:
        expected.add(("PodDisruptionBudget", voters_name))
    if not all_in_one:
        expected |= {("Deployment", f"{full}-gateway"), ("PodDisruptionBudget", f"{full}-gateway")}
        if values["gateway"]["autoscaling"]["enabled"]:
            expected.add(("HorizontalPodAutoscaler", f"{full}-gateway"))
    if values["serviceMonitor"]["enabled"]:
        expected.add(("ServiceMonitor", full))
    if values["prometheusRule"]["enabled"]:
        expected.add(("PrometheusRule", full))
    got = {(k, n) for k, names in by_kind.items() for n in names}
    f.check(got == expected, f"{tag} resources differ: missing {sorted(expected - got)}, unexpected {sorted(got - expected)}")

    def get(kind: str, name: str) -> dict | None:
        return by_kind.get(kind, {}).get(name)

    # Voters: StatefulSet with stable DNS names.
    host = lambda i: f"{voters_name}-{i}.{headless}.{s.namespace}.svc.{values['clusterDomain']}"  # noqa: E731
    sts = get("StatefulSet", voters_name)
    pods: dict[str, dict] = {}
    if sts:
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        pods[voters_name] = spec["template"]
        f.check(spec["replicas"] == replicas, f"{tag} voters: replicas {spec['replicas']} != {replicas}")
        f.check(spec.get("podManagementPolicy") == "Parallel", f"{tag} voters: podManagementPolicy must be Parallel")
        f.check(spec.get("serviceName") == headless, f"{tag} voters: serviceName must be {headless}")
        f.check(pod_matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]),
                f"{tag} voters: selector does not match the pod labels")
        c = pod["containers"][0]
        args = c["args"]
        f.check(args[0] == ("serve" if all_in_one else "store"), f"{tag} voters: command {args[0]}")
        f.check(arg_value(args, "--node-id") == "from-hostname", f"{tag} voters: --node-id must be from-hostname")
        f.check(arg_value(args, "--listen") == f"0.0.0.0:{values['ports']['http']}", f"{tag} voters: --listen")
        f.check(arg_value(args, "--cluster-listen") == f"0.0.0.0:{cluster_port}", f"{tag} voters: --cluster-listen")
        f.check(arg_value(args, "--advertise") == f"$(POD_NAME).{headless}.{s.namespace}.svc.{values['clusterDomain']}:{cluster_port}",
                f"{tag} voters: --advertise {arg_value(args, '--advertise')}")
        # The voters the cluster was installed with form it (--peers); the ones beyond join it.
        initial = min(vvals.get("initialReplicas") or replicas, replicas)
        peers = ",".join(f"{i + 1}={host(i)}:{cluster_port}" for i in range(initial))
        f.check(arg_value(args, "--peers") == peers, f"{tag} voters: --peers {arg_value(args, '--peers')} != {peers}")
        join = ",".join(f"{host(i)}:{cluster_port}" for i in range(initial))
        f.check(arg_value(args, "--join") == join, f"{tag} voters: --join {arg_value(args, '--join')} != {join}")
        f.check(arg_value(args, "--data-dir") == "/data", f"{tag} voters: --data-dir must be /data")
        f.check(any(m["mountPath"] == "/data" and m["name"] == "data" for m in c["volumeMounts"]), f"{tag} voters: /data not mounted")
        f.check({p["name"]: p["containerPort"] for p in c["ports"]}.get("cluster") == cluster_port, f"{tag} voters: no cluster port")
        if vvals["persistence"]["enabled"]:
            claims = spec.get("volumeClaimTemplates", [])
            f.check(len(claims) == 1 and claims[0]["metadata"]["name"] == "data"
                    and claims[0]["spec"]["resources"]["requests"]["storage"] == vvals["persistence"]["size"],
                    f"{tag} voters: volumeClaimTemplates must hold one 'data' claim of {vvals['persistence']['size']}")
        else:
            f.check(not spec.get("volumeClaimTemplates") and any(v["name"] == "data" and "emptyDir" in v for v in pod["volumes"]),
                    f"{tag} voters: without persistence, data must be an emptyDir")
        f.check(env_map(c).get("SWITCHBOARD_SNAPSHOT_EVERY", {}).get("value") == str(vvals["snapshotEvery"]),
                f"{tag} voters: SWITCHBOARD_SNAPSHOT_EVERY")
        f.check(env_map(c).get("SWITCHBOARD_SNAPSHOT_KEEP_LOGS", {}).get("value") == str(vvals["snapshotKeepLogs"]),
                f"{tag} voters: SWITCHBOARD_SNAPSHOT_KEEP_LOGS")
        # Every process proves the key on the cluster listener, store voters included.
        check_pod_security(f, f"{tag} {'serve nodes' if all_in_one else 'store voters'}", spec["template"], values,
                           secret_name, cluster_key_secret, all_in_one, chart_cluster_key)
        check_container_common(f, f"{tag} voters", pod, values, clients=all_in_one)
        check_upstream(f, f"{tag} voters", spec["template"], values, upstream_secret, chart_upstream, clients=all_in_one)

    hl = get("Service", headless)
    if hl and sts:
        f.check(hl["spec"].get("clusterIP") == "None", f"{tag} headless Service must have clusterIP None")
        f.check(hl["spec"].get("publishNotReadyAddresses") is True, f"{tag} headless Service must publish not-ready voters")
        protocols = {p["name"]: p.get("appProtocol") for p in hl["spec"]["ports"]}
        want = {"http": scheme, "cluster": "https" if values["clusterTLS"]["enabled"] else "kubernetes.io/h2c"}
        f.check(protocols == want, f"{tag} headless Service appProtocols {protocols} != {want}")
        f.check(pod_matches(hl["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"]),
                f"{tag} headless Service does not select the voters")

    # Gateways.
    gw_name = f"{full}-gateway"
    dep = get("Deployment", gw_name)
    if dep:
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        pods[gw_name] = spec["template"]
        f.check(pod_matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]),
                f"{tag} gateways: selector does not match the pod labels")
        if values["gateway"]["autoscaling"]["enabled"]:
            f.check("replicas" not in spec, f"{tag} gateways: replicas must be left to the HPA")
        else:
            f.check(spec.get("replicas") == values["gateway"]["replicas"], f"{tag} gateways: replicas")
        c = pod["containers"][0]
        args = c["args"]
        f.check(args[0] == "gateway", f"{tag} gateways: command {args[0]}")
        gw_port = values["ports"]["gatewayCluster"]
        f.check(arg_value(args, "--listen") == f"0.0.0.0:{values['ports']['http']}", f"{tag} gateways: --listen")
        f.check(arg_value(args, "--cluster-listen") == f"0.0.0.0:{gw_port}", f"{tag} gateways: --cluster-listen")
        f.check(arg_value(args, "--advertise") == f"$(POD_IP):{gw_port}", f"{tag} gateways: --advertise")
        if on_redis:
            f.check("--store" not in args, f"{tag} gateways on Redis take no --store")
            f.check(arg_value(args, "--redis-prefix") == values["redis"]["prefix"], f"{tag} gateways: --redis-prefix")
            f.check(not any("redis://" in a for a in args), f"{tag} gateways: the Redis URL must not be on the command line")
            ref = env_map(c).get("SWITCHBOARD_REDIS", {}).get("valueFrom", {}).get("secretKeyRef", {})
            f.check(ref.get("name") == redis_secret and ref.get("key") == values["redis"]["secretKey"],
                    f"{tag} gateways: SWITCHBOARD_REDIS must come from Secret {redis_secret} key {values['redis']['secretKey']}, is {ref}")
            if chart_redis:
                sec = get("Secret", redis_secret)
                if f.check(sec is not None, f"{tag} the Redis Secret {redis_secret} is missing"):
                    data = sec.get("data", {}).get(values["redis"]["secretKey"], "")
                    f.check(base64.b64decode(data).decode() == values["redis"]["url"],
                            f"{tag} the Redis Secret does not hold redis.url")
        else:
            stores = ",".join(f"{host(i)}:{cluster_port}" for i in range(replicas))
            f.check(arg_value(args, "--store") == stores, f"{tag} gateways: --store {arg_value(args, '--store')} != {stores}")
        f.check("--node-id" not in args and "--data-dir" not in args, f"{tag} gateways take no --node-id or --data-dir")
        for extra in values["gateway"]["extraArgs"]:
            f.check(extra in args, f"{tag} gateways: extra arg {extra} missing")
        check_pod_security(f, f"{tag} gateways", spec["template"], values, secret_name, cluster_key_secret, True,
                           chart_cluster_key)
        check_container_common(f, f"{tag} gateways", pod, values, clients=True)
        check_upstream(f, f"{tag} gateways", spec["template"], values, upstream_secret, chart_upstream, clients=True)

    hpa = get("HorizontalPodAutoscaler", gw_name)
    if hpa:
        a = values["gateway"]["autoscaling"]
        f.check(hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": gw_name},
                f"{tag} HPA must scale the gateway Deployment")
        f.check(hpa["spec"]["minReplicas"] == a["minReplicas"] and hpa["spec"]["maxReplicas"] == a["maxReplicas"], f"{tag} HPA bounds")
        metric = hpa["spec"]["metrics"][0]["resource"]
        f.check(metric["name"] == "cpu" and metric["target"]["averageUtilization"] == a["targetCPUUtilizationPercentage"],
                f"{tag} HPA must scale on CPU")

    for pdb_name, limit in ((voters_name, vvals["pdb"]["maxUnavailable"]), (gw_name, values["gateway"]["pdb"]["maxUnavailable"])):
        pdb = get("PodDisruptionBudget", pdb_name)
        if pdb and pdb_name in pods:
            f.check(pdb["spec"].get("maxUnavailable") == limit, f"{tag} PDB {pdb_name}: maxUnavailable")
            f.check(pod_matches(pdb["spec"]["selector"]["matchLabels"], pods[pdb_name]["metadata"]["labels"]),
                    f"{tag} PDB {pdb_name} does not select its pods")

    # The client Service.
    svc = get("Service", full)
    client_pods = voters_name if all_in_one else gw_name
    if svc:
        spec = svc["spec"]
        port = spec["ports"][0]
        f.check(len(spec["ports"]) == 1 and port["port"] == values["service"]["port"] and port["targetPort"] == "http"
                and port.get("appProtocol") == scheme, f"{tag} client Service must map {values['service']['port']} -> http with appProtocol {scheme}")
        f.check(spec.get("sessionAffinity") == "None", f"{tag} client Service needs no session affinity")
        f.check(spec["type"] == values["service"]["type"], f"{tag} client Service type")
        if client_pods in pods:
            f.check(pod_matches(spec["selector"], pods[client_pods]["metadata"]["labels"]),
                    f"{tag} client Service does not select {client_pods}")
        for other, tmpl in pods.items():
            if other != client_pods:
                f.check(not pod_matches(spec["selector"], tmpl["metadata"]["labels"]), f"{tag} client Service also selects {other}")
        if values["service"]["type"] != "ClusterIP" and values["service"]["nodePort"]:
            f.check(port.get("nodePort") == values["service"]["nodePort"], f"{tag} client Service nodePort")

    # Every Service's named target ports exist in the pods it selects.
    for name, service in by_kind.get("Service", {}).items():
        selected = [t for t in pods.values() if pod_matches(service["spec"]["selector"], t["metadata"]["labels"])]
        f.check(bool(selected), f"{tag} Service {name} selects no pods")
        for t in selected:
            names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
            for p in service["spec"]["ports"]:
                f.check(p["targetPort"] in names, f"{tag} Service {name}: targetPort {p['targetPort']} not in the pods")

    # Who reaches the cluster ports.
    np = get("NetworkPolicy", full)
    if np and pods:
        check_network_policy(f, tag, np, pods, values, s.release, s.namespace, all_in_one)

    # Cluster keys: one per line in the Secret, as --cluster-key-file reads them.
    if chart_cluster_key and get("Secret", cluster_key_secret):
        raw = get("Secret", cluster_key_secret)["data"].get(values["clusterKey"]["secretKey"], "")
        text = base64.b64decode(raw).decode() if raw else ""
        want = [k.strip() for k in values["clusterKey"]["value"].split(",") if k.strip()]
        f.check(text.splitlines() == want, f"{tag} cluster key Secret must hold {len(want)} keys one per line")
    check_no_keys_outside_secrets(f, tag, docs, notes, {secret_name, cluster_key_secret} - {""}, values, upstream_secret)

    # The upstream templates: Azure's JSON shape, exactly the values' list, in a Secret.
    if chart_upstream and get("Secret", upstream_secret):
        raw = get("Secret", upstream_secret)["data"].get(values["upstream"]["secretKey"], "")
        try:
            config = json.loads(base64.b64decode(raw).decode()) if raw else None
        except (ValueError, UnicodeDecodeError) as e:
            config = f"not JSON: {e}"
        f.check(config == {"templates": values["upstream"]["templates"]},
                f"{tag} upstream Secret must hold {{\"templates\": upstream.templates}}, got {config}")

    # Access keys.
    secret = get("Secret", secret_name)
    if secret:
        raw = secret["data"].get(values["accessKey"]["secretKey"], "")
        key = base64.b64decode(raw).decode() if raw else ""
        f.check(bool(key), f"{tag} Secret has no access key")
        if values["accessKey"]["value"]:
            f.check(key == values["accessKey"]["value"], f"{tag} Secret does not hold accessKey.value")
        else:
            f.check(len(key) >= 32, f"{tag} generated access key is too short")

    # Monitoring.
    sm = get("ServiceMonitor", full)
    if sm:
        f.check(sm["spec"].get("jobLabel") == "switchboard.io/scrape-job", f"{tag} ServiceMonitor jobLabel")
        scraped = {n: svc_ for n, svc_ in by_kind.get("Service", {}).items()
                   if pod_matches(sm["spec"]["selector"]["matchLabels"], svc_["metadata"]["labels"])
                   and "switchboard.io/scrape-job" in svc_["metadata"]["labels"]}
        jobs = sorted(v["metadata"]["labels"]["switchboard.io/scrape-job"] for v in scraped.values())
        want = ["switchboard"] if all_in_one else ["switchboard-gateway", "switchboard-store"]
        f.check(jobs == want, f"{tag} ServiceMonitor jobs {jobs} != {want} (each pod scraped once)")
        for n, v in scraped.items():
            f.check(any(p["name"] == sm["spec"]["endpoints"][0]["port"] for p in v["spec"]["ports"]), f"{tag} Service {n} has no metrics port")
        for ep in sm["spec"]["endpoints"]:
            f.check(ep.get("scheme") == scheme, f"{tag} ServiceMonitor scheme {ep.get('scheme')} != {scheme}")
            want_tls = (values["serviceMonitor"]["tlsConfig"] or {"insecureSkipVerify": True}) if values["tls"]["enabled"] else None
            f.check(ep.get("tlsConfig") == want_tls, f"{tag} ServiceMonitor tlsConfig {ep.get('tlsConfig')} != {want_tls}")
        for k, v in values["serviceMonitor"]["labels"].items():
            f.check(sm["metadata"]["labels"].get(k) == v, f"{tag} ServiceMonitor label {k}")
    pr = get("PrometheusRule", full)
    if pr:
        f.check(pr["spec"] == yaml.safe_load(RULES.read_text()), f"{tag} PrometheusRule differs from {RULES.name}")
    cm = get("ConfigMap", f"{full}-dashboard")
    if cm:
        for k, v in values["dashboard"]["labels"].items():
            f.check(cm["metadata"]["labels"].get(k) == v, f"{tag} dashboard ConfigMap lacks label {k}={v}")
        body = cm["data"].get("switchboard-dashboard.json", "")
        try:
            f.check(json.loads(body) == json.loads(DASHBOARD.read_text()), f"{tag} dashboard ConfigMap differs from the file")
        except json.JSONDecodeError as e:
            f.fail(f"{tag} dashboard ConfigMap JSON does not parse: {e}")

    # NOTES.txt tells how to get the connection string.
    f.check(f"kubectl -n {s.namespace} get secret {secret_name}" in notes, f"{tag} NOTES.txt must show how to read the Secret")
    f.check(f"Endpoint={scheme}://{full}.{s.namespace}.svc.{values['clusterDomain']};Port={values['service']['port']};AccessKey=" in notes,
            f"{tag} NOTES.txt must show the connection string")
    upstream_note = f"the templates of secret {upstream_secret} " if upstream_secret else "Upstream (client events"
    f.check(upstream_note in notes, f"{tag} NOTES.txt must name the upstream's Secret ({upstream_note!r})")


def check_invalid(f: Failures, chart: helm.Chart) -> None:
    for values, message in INVALID:
        try:
            chart.render(values, name="switchboard", namespace="default", is_install=True)
            f.fail(f"values {values} should be refused ({message})")
        except helm.HelmError as e:
            f.check(message in str(e), f"values {values}: refused with '{e}', expected '{message}'")


def main() -> None:
    f = Failures("chart")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    check_chart_yaml(f)
    check_values_documented(f)
    check_values_references(f, defaults)
    chart = helm.Chart.load(str(CHART))
    f.check(not any(t["name"].startswith("rules/") and t["name"].endswith(".test.yaml") for t in chart.files),
            "the rules' unit tests must be left out of the chart (.helmignore)")
    for s in SCENARIOS:
        check_scenario(f, chart, defaults, s)
    check_invalid(f, chart)
    print(f"chart: rendered with Helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    f.finish()


if __name__ == "__main__":
    main()
