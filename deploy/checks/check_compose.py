"""Checks of deploy/compose.yaml that need no Docker engine. Usage:
check_compose.py [PATH_TO_SWITCHBOARD_BINARY]

Always (static):
- the Switchboard services use the image built from deploy/Dockerfile (context the repository
  root, tagged switchboard:local); commands are exec-form lists of `store` or `gateway`;
- store voters: distinct node ids; every voter's --peers lists every voter, at its service name
  and --cluster-listen port, its own entry equal to its --advertise; a volume of its own on
  --data-dir; the gateway's --store lists exactly the voters' cluster addresses, its --advertise
  is its service name and cluster port, its published port reaches its --listen port and its
  --public-endpoint is that published address; the gateway's stop_grace_period exceeds its
  shutdown grace;
- the access key only ever comes from `${SWITCHBOARD_ACCESS_KEY:?...}` (Compose refuses to start
  without it): no key on a command line, in an environment value, or in a connection string;
- Prometheus: its config and the alert rules are mounted from files in the repository, the
  mounted rule file is the chart's rules file, `promtool check config` accepts the config (with
  the rule files at their repository paths), and the scrape jobs are the chart's job names with
  targets equal to the services' --listen addresses.

With a binary (deploy/check.sh with SWITCHBOARD_BIN): every flag and variable is one
`switchboard <command> --help` lists, with the command's required flags given; then the topology
runs as local processes, each service on its own 127.0.0.x address (service names and 0.0.0.0
become those addresses, the ports free ports, the data dirs temporary directories, the key a
random one): every /readyz answers 200, a WebSocket client on the gateway receives a REST
broadcast sent to it (202), Prometheus (when installed) scrapes every target up with the alert
rules loaded, and every process exits 0 on SIGTERM within its stop grace period.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import DEPLOY, ROOT, RULES, Failures

COMPOSE = DEPLOY / "compose.yaml"
KEY_VAR = "SWITCHBOARD_ACCESS_KEY"
KEY_REF = re.compile(r"^\$\{SWITCHBOARD_ACCESS_KEY:\?[^}]+\}$")
# The scrape job of each command, as the chart's ServiceMonitor names them (the rules and the
# dashboard select on them).
JOBS = {"store": "switchboard-store", "gateway": "switchboard-gateway"}
IMAGE = "switchboard:local"
# Defaults of the flags the checks read (`switchboard <command> --help`).
DEFAULT_SHUTDOWN_GRACE = 10
COMPOSE_DEFAULT_STOP_GRACE = 10.0


def flags(command: list[str]) -> dict[str, str]:
    """`--flag value` pairs of an exec-form command (the first word is the subcommand)."""
    out = {}
    for i, word in enumerate(command[1:], 1):
        if word.startswith("--"):
            out[word] = command[i + 1] if i + 1 < len(command) else ""
    return out


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port) if port.isdigit() else -1


def duration(value: str | int | float | None, default: float) -> float:
    """A Compose duration (`30s`, `1m30s`, `500ms`) in seconds."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    total, matched = 0.0, ""
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", value):
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[m.group(2)]
        matched += m.group(0)
    return total if matched == value else -1.0


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port (short syntax)."""
    out = []
    for p in service.get("ports", []):
        parts = str(p).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0]), int(parts[1])))
    return out


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume (short syntax); a source with a `/` or `.` is a bind mount."""
    out = []
    for v in service.get("volumes", []):
        parts = str(v).split(":")
        out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


class Topology:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.services: dict[str, dict] = doc.get("services") or {}
        self.switchboard = {n: s for n, s in self.services.items()
                            if isinstance(s.get("command"), list) and s["command"][:1] in (["store"], ["gateway"])}
        self.voters = {n: s for n, s in self.switchboard.items() if s["command"][0] == "store"}
        self.gateways = {n: s for n, s in self.switchboard.items() if s["command"][0] == "gateway"}
        self.prometheus = {n: s for n, s in self.services.items() if "prometheus" in str(s.get("image", ""))}


def check_static(f: Failures, t: Topology) -> None:
    f.check(len(t.voters) == 3, f"expected three store voters, found {sorted(t.voters)}")
    f.check(len(t.gateways) >= 1, "no gateway service")
    f.check(len(t.prometheus) == 1, f"expected one Prometheus service, found {sorted(t.prometheus)}")
    for name, s in t.services.items():
        if name not in t.switchboard and name not in t.prometheus:
            f.fail(f"service {name} is neither a switchboard store/gateway (exec-form command) nor Prometheus")

    # The image.
    for name, s in t.switchboard.items():
        build = s.get("build") or {}
        f.check(s.get("image") == IMAGE, f"{name}: image is {s.get('image')}, expected {IMAGE}")
        context = (DEPLOY / str(build.get("context", ""))).resolve()
        f.check(context == ROOT, f"{name}: build context {build.get('context')} is not the repository root")
        f.check((context / str(build.get("dockerfile", ""))).resolve() == DEPLOY / "Dockerfile",
                f"{name}: build dockerfile {build.get('dockerfile')} is not deploy/Dockerfile")
        f.check("healthcheck" not in s, f"{name}: a healthcheck needs a tool the distroless image does not have")

    # Voters: ids, peers, advertise, data.
    ids: dict[str, str] = {}
    expected_peers: dict[str, str] = {}
    for name, s in t.voters.items():
        fl = flags(s["command"])
        node_id = fl.get("--node-id", "")
        f.check(node_id.isdigit() and int(node_id) > 0, f"{name}: --node-id {node_id!r} is not a positive number")
        f.check(node_id not in ids, f"{name}: node id {node_id} is also {ids.get(node_id)}'s")
        ids[node_id] = name
        _, cport = host_port(fl.get("--cluster-listen", ""))
        f.check(cport > 0, f"{name}: no --cluster-listen port")
        expected_peers[node_id] = f"{name}:{cport}"
    for name, s in t.voters.items():
        fl = flags(s["command"])
        peers = dict(p.split("=", 1) for p in fl.get("--peers", "").split(",") if "=" in p)
        f.check(peers == expected_peers, f"{name}: --peers {fl.get('--peers')} is not every voter at its "
                                         f"service name and cluster port ({expected_peers})")
        own = expected_peers.get(fl.get("--node-id", ""))
        f.check(fl.get("--advertise", own) == own, f"{name}: --advertise {fl.get('--advertise')} is not {own}")
        data = fl.get("--data-dir")
        if f.check(bool(data), f"{name}: no --data-dir"):
            volume = next((src for src, dst in mounts(s) if dst == data), None)
            f.check(volume is not None and volume in (t.doc.get("volumes") or {}),
                    f"{name}: --data-dir {data} is not on a named volume of the file")
    data_volumes = [src for s in t.voters.values() for src, dst in mounts(s) if dst == flags(s["command"]).get("--data-dir")]
    f.check(len(set(data_volumes)) == len(data_volumes), f"voters share a data volume: {data_volumes}")

    # Gateways.
    store_set = sorted(expected_peers.values())
    for name, s in t.gateways.items():
        fl = flags(s["command"])
        f.check(sorted(fl.get("--store", "").split(",")) == store_set,
                f"{name}: --store {fl.get('--store')} is not the voters' cluster addresses {store_set}")
        _, cport = host_port(fl.get("--cluster-listen", ""))
        f.check(fl.get("--advertise") == f"{name}:{cport}",
                f"{name}: --advertise {fl.get('--advertise')} is not {name}:{cport} (other gateways dial it)")
        _, lport = host_port(fl.get("--listen", ""))
        ports = published(s)
        reach = [(h, hp) for h, hp, cp in ports if cp == lport]
        f.check(bool(reach) and len(reach) == len(ports),
                f"{name}: published ports {s.get('ports')} do not all reach --listen port {lport}")
        if reach and "--public-endpoint" in fl:
            h, hp = reach[0]
            want = {f"http://localhost:{hp}", f"http://{'127.0.0.1' if h == '0.0.0.0' else h}:{hp}"}
            f.check(fl["--public-endpoint"] in want,
                    f"{name}: --public-endpoint {fl['--public-endpoint']} is not the published address {sorted(want)}")
        grace = float(fl.get("--shutdown-grace", DEFAULT_SHUTDOWN_GRACE))
        stop = duration(s.get("stop_grace_period"), COMPOSE_DEFAULT_STOP_GRACE)
        f.check(stop > grace, f"{name}: stop_grace_period ({stop} s) does not exceed --shutdown-grace ({grace} s)")
        f.check(set(s.get("depends_on") or []) >= set(t.voters), f"{name}: does not depend on every voter")
    for name, s in t.voters.items():
        f.check(not s.get("ports"), f"{name}: a voter publishes ports {s.get('ports')} (only the gateway takes clients)")

    # Listening addresses: every switchboard process listens on all interfaces of its container.
    for name, s in t.switchboard.items():
        fl = flags(s["command"])
        for flag in ("--listen", "--cluster-listen"):
            host, port = host_port(fl.get(flag, ""))
            f.check(host == "0.0.0.0" and port > 0, f"{name}: {flag} {fl.get(flag)} is not 0.0.0.0:PORT")

    # The key.
    for name, s in t.switchboard.items():
        env = s.get("environment") or {}
        f.check(isinstance(env, dict), f"{name}: environment must be a mapping")
        value = str(env.get(KEY_VAR, "")) if isinstance(env, dict) else ""
        f.check(bool(KEY_REF.match(value)),
                f"{name}: {KEY_VAR} must be `${{{KEY_VAR}:?message}}` (required from the caller), not {value!r}")
        words = s["command"]
        for flag in ("--access-key", "--cluster-key"):
            f.check(flag not in words, f"{name}: {flag} on the command line (the key would be in the file and in `ps`)")
        for k, v in (env.items() if isinstance(env, dict) else []):
            if k != KEY_VAR and ("KEY" in k.upper() and not k.upper().endswith("_FILE")):
                f.fail(f"{name}: environment {k} looks like a key written into the file")
    text = COMPOSE.read_text()
    f.check("AccessKey=" not in text.replace("AccessKey=$SWITCHBOARD_ACCESS_KEY", ""),
            "compose.yaml holds a connection string with a key")

    for name, s in t.prometheus.items():
        check_prometheus_service(f, t, name, s)


def prometheus_config(t: Topology, name: str) -> tuple[dict, Path, dict[str, Path]]:
    """The mounted Prometheus config, its file, and the repository file of each mounted path."""
    s = t.prometheus[name]
    files = {dst: (DEPLOY / src).resolve() for src, dst in mounts(s) if src.startswith((".", "/"))}
    config_path = files.get("/etc/prometheus/prometheus.yml")
    if config_path is None or not config_path.is_file():
        raise FileNotFoundError(f"{name}: /etc/prometheus/prometheus.yml is not mounted from a file of the repository")
    return yaml.safe_load(config_path.read_text()), config_path, files


def check_prometheus_service(f: Failures, t: Topology, name: str, s: dict) -> None:
    try:
        config, config_path, files = prometheus_config(t, name)
    except FileNotFoundError as e:
        f.fail(str(e))
        return
    for dst, src in files.items():
        f.check(src.exists(), f"{name}: mounted {dst} from {src}, which does not exist")
        f.check(ROOT in src.parents, f"{name}: mounted {dst} from {src}, outside the repository")
    rule_files = config.get("rule_files") or []
    f.check(bool(rule_files), f"{name}: no rule_files: the alert rules are not loaded")
    local_rules = []
    for r in rule_files:
        src = files.get(r)
        if f.check(src is not None, f"{name}: rule file {r} is not mounted"):
            local_rules.append(str(src))
            f.check(src == RULES, f"{name}: rule file {r} is {src}, not the chart's {RULES}")
    if shutil.which("promtool"):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "prometheus.yml"
            local.write_text(yaml.safe_dump({**config, "rule_files": local_rules}))
            proc = subprocess.run(["promtool", "check", "config", str(local)], capture_output=True, text=True)
            f.check(proc.returncode == 0, f"{name}: promtool check config of {config_path.name}:\n{proc.stdout}{proc.stderr}")
    jobs = {c["job_name"]: sorted(t_ for sc in c.get("static_configs", []) for t_ in sc.get("targets", []))
            for c in config.get("scrape_configs", [])}
    want: dict[str, list[str]] = {}
    for svc, spec in t.switchboard.items():
        _, port = host_port(flags(spec["command"]).get("--listen", ""))
        want.setdefault(JOBS[spec["command"][0]], []).append(f"{svc}:{port}")
    want = {k: sorted(v) for k, v in want.items()}
    f.check(jobs == want, f"{name}: scrape jobs {jobs} are not the services' --listen addresses {want}")


# ------------------------------------------------------------------------------- with a binary

def live(f: Failures, t: Topology, binary: str) -> None:
    import check_live as cl  # the chart's live checks: --help parsing, processes, a SignalR client

    cl.BINARY = binary
    helps = {c: cl.read_help(binary, c) for c in ("store", "gateway")}
    for name, s in t.switchboard.items():
        env = set((s.get("environment") or {}).keys())
        cl.check_command_line(f, f"compose {name}", s["command"], env, helps, [])
    if f.items:
        return
    cl.say("flags: the compose file's command lines and variables are the binary's")

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-compose-"))
    names = list(t.switchboard)
    ips = {n: f"127.0.0.{61 + i}" for i, n in enumerate(names)}
    container_ports = sorted({host_port(flags(s["command"])[fl])[1] for s in t.switchboard.values()
                              for fl in ("--listen", "--cluster-listen")})
    ports = {p: cl.common_free_port(list(ips.values())) for p in container_ports}
    key = base64.b64encode(os.urandom(32)).decode()
    # Host ports Compose publishes, and the service and container port behind each.
    host_ports = {hp: (n, cp) for n, s in t.switchboard.items() for _, hp, cp in published(s)}

    def translate(word: str, own: str) -> str:
        def address(m: re.Match) -> str:
            host, port = m.group(1), int(m.group(2))
            if host in ("localhost", "127.0.0.1") and port in host_ports:
                svc, cport = host_ports[port]
                return f"{ips[svc]}:{ports[cport]}"
            host = ips[own] if host == "0.0.0.0" else ips.get(host, host)
            return f"{host}:{ports.get(port, port)}"
        return re.sub(r"([A-Za-z0-9_.\-]+):(\d+)", address, word)

    pods: list[cl.Pod] = []
    for n in names:
        s = t.switchboard[n]
        argv = [translate(w, n) for w in s["command"]]
        if "--data-dir" in argv:
            data = workdir / n
            data.mkdir()
            argv[argv.index("--data-dir") + 1] = str(data)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for k, v in (s.get("environment") or {}).items():
            env[k] = key if k == KEY_VAR else str(v)
        fl = flags(s["command"])
        kind = s["command"][0]
        pods.append(cl.Pod(n, kind, JOBS[kind], ips[n], ports[host_port(fl["--listen"])[1]], [binary] + argv, env,
                           "/readyz", int(duration(s.get("stop_grace_period"), COMPOSE_DEFAULT_STOP_GRACE)),
                           workdir / f"{n}.log", cluster_port=ports[host_port(fl["--cluster-listen"])[1]]))
    prom_proc: subprocess.Popen | None = None
    try:
        for p in pods:
            p.start()
        for p in pods:
            ready = cl.wait_until(lambda p=p: cl.http("GET", p.base + "/readyz")[0] == 200 or not p.alive(), 60)
            f.check(ready and p.alive(), f"{p.name} ({p.kind}) did not become ready:\n{p.tail()}")
        if f.items:
            return
        cl.say(f"ready: {', '.join(f'{p.name} ({p.base})' for p in pods)}")
        gateway = next(p for p in pods if p.kind == "gateway")
        cl.delivered_across(f, "compose", key, gateway, gateway)
        if f.items:
            return
        cl.say(f"a client on {gateway.name} received a REST broadcast sent to it (202)")

        if shutil.which("prometheus"):
            prom_proc = run_prometheus(f, t, workdir, translate, cl)
        else:
            print("  note: no prometheus binary (Debian package prometheus): the compose scrape config not run")
    finally:
        if prom_proc is not None and prom_proc.poll() is None:
            prom_proc.terminate()
            prom_proc.wait(timeout=20)
        for p in reversed(pods):  # the gateway first, voters last
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
                try:
                    code = p.proc.wait(timeout=p.grace)
                    f.check(code == 0, f"{p.name} exited with status {code} on SIGTERM:\n{p.tail()}")
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait()
                    f.fail(f"{p.name} did not stop within {p.grace} s of SIGTERM:\n{p.tail()}")
            elif p.proc is not None:
                f.fail(f"{p.name} had exited with status {p.proc.returncode}:\n{p.tail()}")
        if f.items:
            print(f"  logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_prometheus(f: Failures, t: Topology, workdir: Path, translate, cl) -> subprocess.Popen:
    """The compose Prometheus config with its targets translated like the services' addresses and
    its rule files at their repository paths, scraping every 1 s: every target up, rules loaded."""
    name = next(iter(t.prometheus))
    config, _, files = prometheus_config(t, name)
    config = dict(config)
    config["global"] = {**(config.get("global") or {}), "scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(files[r]) for r in config.get("rule_files", [])]
    for c in config["scrape_configs"]:
        for sc in c.get("static_configs", []):
            sc["targets"] = [translate(target, "") for target in sc["targets"]]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = cl.common_free_port(["127.0.0.1"])
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"],
                            stdin=subprocess.DEVNULL, stdout=(workdir / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
    targets = sum(len(sc["targets"]) for c in config["scrape_configs"] for sc in c.get("static_configs", []))

    def up() -> int:
        status, body = cl.http("GET", f"{base}/api/v1/query?query=count(up%20%3D%3D%201)")
        try:
            result = json.loads(body)["data"]["result"]
            return int(float(result[0]["value"][1])) if result else 0
        except (ValueError, KeyError, IndexError):
            return 0
    f.check(cl.wait_until(lambda: up() == targets, 60), f"Prometheus sees {up()} of {targets} compose targets up")
    status, body = cl.http("GET", f"{base}/api/v1/rules?type=alert")
    try:
        loaded = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
    except (ValueError, KeyError):
        loaded = set()
    want = set(cl.alert_rules())
    f.check(status == 200 and loaded == want, f"Prometheus loaded the alerts {sorted(loaded)}, not {sorted(want)}: {status}")
    if not f.items:
        cl.say(f"Prometheus: the compose scrape config finds all {targets} targets up, the alert rules loaded")
    return proc


def main() -> None:
    f = Failures("compose")
    t = Topology(yaml.safe_load(COMPOSE.read_text()))
    check_static(f, t)
    if len(sys.argv) > 1 and not f.items:
        live(f, t, str(Path(sys.argv[1]).resolve()))
    f.finish()


if __name__ == "__main__":
    main()
