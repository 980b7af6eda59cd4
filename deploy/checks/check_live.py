"""Checks against a real binary (deploy/check.sh with SWITCHBOARD_BIN=...). Usage:
check_live.py PATH_TO_SWITCHBOARD_BINARY

1. flags: every flag and `SWITCHBOARD_*` variable the chart gives a container (each value set of
   check_chart.py) and the image's default command are ones `switchboard <command> --help`
   lists for that command, and the command's required flags are all given;
2. processes started from the chart's own command lines and environment: the default rendering
   (3 `store` voters, 2 `gateway`s) with upstream templates, and the allInOne rendering (3 `serve`
   nodes) with an existing upstream Secret, a separate cluster key, cluster mutual TLS and public
   TLS (certificates made with openssl in the shapes cert-manager writes: an ECDSA key in SEC1 for
   the cluster, RSA in PKCS#1 for the public listener; without openssl, allInOne with only the
   upstream), plus the image's default command (one `serve` node, no upstream). Both upstreams
   point at a stub HTTP server of this script (a `?code=` key in the URL). Each pod runs on its own 127.0.0.x address: the pods' DNS names and 0.0.0.0
   become those addresses, the chart's ports become free ports, $(VAR) references are expanded
   from the container's environment, HOSTNAME is the pod name (for `--node-id from-hostname`),
   the access key comes from the rendered Secret, and each Secret volume becomes a directory of
   its projected keys that the variables and arguments pointing into the mount are redirected to. Every
   readiness probe must answer 200 (over the probe's scheme); a voter's HTTP port serves only
   /api/health, /readyz and /metrics; with cluster TLS, a serve node's cluster port completes
   HTTP/2 over TLS only for a client certificate of the cluster CA;
3. traffic: a WebSocket client (SignalR JSON protocol) on the second gateway (and serve node)
   receives a REST broadcast sent to the first; its connected and disconnected events reach the
   stub upstream at the template's URL, query string kept, signed with the access key, and the
   node counts them as ok;
4. metrics: every metric of metric_names.txt is exported, with its type, by each kind of process
   the file says exports it (the `with-upstream` ones only by processes with an upstream), and
   by no other;
5. Prometheus (the `prometheus` binary from Debian's package, when installed) scrapes every process
   under the chart's job names; every dashboard query and variable and every alert expression
   evaluates without error; a query returns data whenever the series it reads exist; no alert
   expression holds in the healthy cluster. Then faults, one after the other: the cluster's
   upstream answering 500 to a client's events (SwitchboardUpstreamFailing holds), a gateway killed
   (SwitchboardGatewayDown and SwitchboardPeerStreamDown hold), the Raft leader and one more voter
   killed (SwitchboardNoRaftLeader holds), the last voter killed (SwitchboardGatewayStoreWatchDown
   holds), while the allInOne cluster stays clear of every alert;
6. shutdown: every process still running exits with status 0 on SIGTERM within the pod's
   terminationGracePeriodSeconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import helm_python as helm
import yaml
from dockerfile_parse import DockerfileParser

from check_chart import SCENARIOS, merge
from common import CHART, DASHBOARD, DEPLOY, RULES, Failures, load_metric_table, referenced_series

# Read by the logger, not a flag.
ENV_NOT_FLAGS = {"SWITCHBOARD_LOG"}
# Grafana's $__rate_interval for a 1 s scrape interval, rounded up.
RATE_INTERVAL = "10s"
READY_TIMEOUT = 120.0
# The binary under test (main sets it).
BINARY = ""
# CA of the live installs' public TLS certificate (make_pki sets it), trusted by the HTTPS client.
PUBLIC_CA = ""
# Where each install's upstream template points on the stub upstream (the first path segment).
CLUSTER_UPSTREAM = "cluster"
ALL_IN_ONE_UPSTREAM = "allinone"


# ------------------------------------------------------------------------------------ helpers

def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    context = https_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def https_context() -> ssl.SSLContext:
    """A client context trusting the live CA. Like the kubelet and a ServiceMonitor without a
    tlsConfig, it does not check the host name (the pods are reached by IP)."""
    ctx = ssl.create_default_context(cafile=PUBLIC_CA or None)
    ctx.check_hostname = False
    return ctx


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def common_free_port(ips: list[str]) -> int:
    """A TCP port free on every one of `ips`."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        try:
            for ip in ips[1:]:
                with socket.socket() as t:
                    t.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {ips}")


def parse_exposition(text: str) -> tuple[dict[str, str], set[str], dict[str, list[tuple[dict[str, str], float]]]]:
    """(# TYPE of each metric, every sample name, samples by name with their labels)."""
    types: dict[str, str] = {}
    names: set[str] = set()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            names.add(m.group(1))
            try:
                value = float(m.group(4))
            except ValueError:
                continue
            samples.setdefault(m.group(1), []).append((labels, value))
    return types, names, samples


# --------------------------------------------------------------------------------- 1. flags

@dataclass
class Help:
    flags: set[str]
    envs: set[str]
    required: set[str]


def read_help(binary: str, command: str) -> Help:
    out = subprocess.run([binary, command, "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out, re.M))
    # `[env: NAME=value]`, or `[env: NAME]` for flags whose values --help hides (the keys).
    envs = set(re.findall(r"\[env: (SWITCHBOARD_[A-Z0-9_]+)[=\]]", out))
    usage = next((line for line in out.splitlines() if line.startswith("Usage:")), "")
    required = set(re.findall(r"(?<!\[)(--[a-z0-9-]+) <", usage.split("[OPTIONS]", 1)[-1]))
    return Help(flags, envs, required)


def flag_env(flag: str) -> str:
    return "SWITCHBOARD_" + flag.removeprefix("--").upper().replace("-", "_")


def check_command_line(f: Failures, where: str, args: list[str], env: set[str], helps: dict[str, Help],
                       extra_args: list[str]) -> None:
    if not f.check(bool(args) and args[0] in helps, f"{where}: command {args[:1]} is not a switchboard command"):
        return
    h = helps[args[0]]
    given = set()
    for i, a in enumerate(args[1:], 1):
        if not a.startswith("--") or a in extra_args:
            continue
        given.add(a)
        f.check(a in h.flags, f"{where}: `switchboard {args[0]}` has no flag {a}")
        f.check(i + 1 < len(args) and not args[i + 1].startswith("--"), f"{where}: {a} has no value")
    for name in sorted(env):
        if name.startswith("SWITCHBOARD_") and name not in ENV_NOT_FLAGS:
            f.check(name in h.envs, f"{where}: `switchboard {args[0]}` reads no {name}")
    for flag in sorted(h.required):
        f.check(flag in given or flag_env(flag) in env, f"{where}: required {flag} is not given")


def rendered_docs(chart: helm.Chart, values: dict | None, release: str, namespace: str) -> list[dict]:
    out = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    return docs


def check_flags(f: Failures, binary: str, chart: helm.Chart, defaults: dict) -> None:
    helps = {c: read_help(binary, c) for c in ("serve", "gateway", "store")}
    for s in SCENARIOS:
        values = merge(defaults, s.values)
        for d in rendered_docs(chart, s.values, s.release, s.namespace):
            if d["kind"] not in ("StatefulSet", "Deployment"):
                continue
            c = d["spec"]["template"]["spec"]["containers"][0]
            component = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            extra = {"store": values["store"], "gateway": values["gateway"], "server": values["allInOne"]}[component]["extraArgs"]
            env = {e["name"] for e in c.get("env", [])} - {e["name"] for e in values["extraEnv"]}
            check_command_line(f, f"[{s.name}] {d['kind']} {d['metadata']['name']}", c["args"], env, helps, extra)
    cmd = DockerfileParser(path=str(DEPLOY / "Dockerfile")).cmd
    check_command_line(f, "Dockerfile CMD", json.loads(cmd), set(), helps, [])


# ------------------------------------------------------------------------------ 2. processes

@dataclass
class Pod:
    name: str
    kind: str  # serve, serve-cluster, gateway, store (as in metric_names.txt)
    job: str
    ip: str
    http_port: int
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    grace: int
    log: Path
    proc: subprocess.Popen | None = None
    killed: bool = False
    scheme: str = "http"  # of the HTTP port: the readiness probe's
    cluster_port: int = 0
    upstream: bool = False  # started with --upstream-config (exports the upstream metrics)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.ip}:{self.http_port}"

    @property
    def target(self) -> str:
        return f"{self.ip}:{self.http_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.killed = True

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join("      " + line for line in self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command arguments."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


class Install:
    """The pods of one chart rendering, run as local processes."""

    def __init__(self, chart: helm.Chart, values: dict | None, release: str, first_ip: int, workdir: Path,
                 external: dict[str, dict[str, bytes]] | None = None) -> None:
        """`external`: the Secrets the values name but the chart does not render (TLS), by name."""
        namespace = "default"
        docs = rendered_docs(chart, merge(values or {}, {"serviceMonitor": {"enabled": True}}), release, namespace)
        secrets = [d for d in docs if d["kind"] == "Secret"]
        secret_data = {s["metadata"]["name"]: {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
                       for s in secrets}
        secret_data.update(external or {})
        services = [d for d in docs if d["kind"] == "Service"]
        hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
        workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
        self.pods: list[Pod] = []
        self.key = ""

        plan: list[tuple[dict, str, str, str]] = []  # (workload, pod name, dns name, ip)
        next_ip = first_ip
        for w in sorted(workloads, key=lambda d: d["kind"], reverse=True):  # voters first
            name = w["metadata"]["name"]
            replicas = w["spec"].get("replicas") or hpas[name]["spec"]["minReplicas"]
            for i in range(replicas):
                pod = f"{name}-{i}"
                dns = f"{pod}.{w['spec']['serviceName']}.{namespace}.svc.cluster.local" if w["kind"] == "StatefulSet" else pod
                plan.append((w, pod, dns, f"127.0.0.{next_ip}"))
                next_ip += 1
        hosts = {dns: ip for _, _, dns, ip in plan}
        ips = [ip for *_, ip in plan]
        chart_ports = {p["containerPort"] for w in workloads for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]}
        ports = {p: common_free_port(ips) for p in sorted(chart_ports)}

        def address(m: re.Match, own_ip: str) -> str:
            host, port = m.group(1), int(m.group(2))
            host = own_ip if host == "0.0.0.0" else hosts.get(host, host)
            return f"{host}:{ports.get(port, port)}"

        for w, pod, _, ip in plan:
            spec = w["spec"]["template"]["spec"]
            labels = w["spec"]["template"]["metadata"]["labels"]
            c = spec["containers"][0]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod}
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                    continue
                src = e["valueFrom"]
                if "fieldRef" in src:
                    env[e["name"]] = {"metadata.name": pod, "metadata.namespace": namespace,
                                      "status.podIP": ip}[src["fieldRef"]["fieldPath"]]
                elif "secretKeyRef" in src:
                    ref = src["secretKeyRef"]
                    secret = next(s for s in secrets if s["metadata"]["name"] == ref["name"])
                    env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
                    self.key = env[e["name"]].split(",")[0]
            # Secret volumes: a directory per mount with the projected keys; variables naming a file
            # in the mount are pointed at the directory (a missing file is the binary's to report).
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounts: list[tuple[str, Path]] = []
            for m in c.get("volumeMounts", []):
                src = volumes.get(m["name"], {}).get("secret")
                if src is None:
                    continue
                data = secret_data[src["secretName"]]
                local = workdir / pod / "mounts" / m["name"]
                local.mkdir(parents=True, exist_ok=True)
                for item in src.get("items") or [{"key": k, "path": k} for k in data]:
                    (local / item["path"]).write_bytes(data[item["key"]])
                prefix = m["mountPath"].rstrip("/") + "/"
                mounts.append((prefix, local))
                for name, value in env.items():
                    if value.startswith(prefix):
                        env[name] = str(local / value[len(prefix):])
            args = [expand(a, env) for a in c["args"]]
            args = [re.sub(r"([A-Za-z0-9_.\-]+):(\d+)", lambda m: address(m, ip), a) for a in args]
            # Arguments naming a file in a mount (--upstream-config) are redirected the same way.
            for prefix, local in mounts:
                args = [str(local / a[len(prefix):]) if a.startswith(prefix) else a for a in args]
            if "--data-dir" in args:
                data = workdir / pod
                data.mkdir(parents=True, exist_ok=True)
                args[args.index("--data-dir") + 1] = str(data)
            kind = {"store": "store", "gateway": "gateway", "server": "serve-cluster"}[labels["app.kubernetes.io/component"]]
            job = next(s["metadata"]["labels"]["switchboard.io/scrape-job"] for s in services
                       if "switchboard.io/scrape-job" in s["metadata"]["labels"]
                       and all(labels.get(k) == v for k, v in s["spec"]["selector"].items()))
            http_port = ports[next(p["containerPort"] for p in c["ports"] if p["name"] == "http")]
            cluster_port = ports[next(p["containerPort"] for p in c["ports"] if p["name"] == "cluster")]
            probe = c["readinessProbe"]["httpGet"]
            self.pods.append(Pod(pod, kind, job, ip, http_port, [BINARY] + args, env, probe["path"],
                                 spec["terminationGracePeriodSeconds"], workdir / f"{pod}.log",
                                 scheme=probe.get("scheme", "HTTP").lower(), cluster_port=cluster_port,
                                 upstream="--upstream-config" in args))


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(workdir: Path) -> tuple[dict[str, dict[str, bytes]], dict[str, Path]]:
    """A CA, one cluster certificate for every pod (server and client auth; a DNS name no pod
    has, as peers are checked against the CA only) and a public certificate, in the shapes
    cert-manager writes; and a certificate of another CA. Returns the Secrets by name and the
    files by role."""
    d = workdir / "pki"
    d.mkdir(parents=True)
    files = {n: d / n for n in ("ca.crt", "ca.key", "cluster.crt", "cluster.key", "public.crt", "public.key",
                                "rogue.crt", "rogue.key")}

    def ext(name: str, text: str) -> str:
        (d / name).write_text(text)
        return str(d / name)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=switchboard live-check CA", "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    both = ext("cluster.ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                              "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:switchboard-cluster\n")
    server = ext("public.ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:switchboard.example.test\n")
    # Cluster: ECDSA P-256, the key in SEC1 ("EC PRIVATE KEY"), cert-manager's default encoding.
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(files["cluster.key"]))
    openssl("req", "-new", "-key", str(files["cluster.key"]), "-subj", "/CN=switchboard-cluster", "-out", str(d / "cluster.csr"))
    openssl("x509", "-req", "-in", str(d / "cluster.csr"), "-CA", str(files["ca.crt"]), "-CAkey", str(files["ca.key"]),
            "-CAcreateserial", "-days", "2", "-extfile", both, "-out", str(files["cluster.crt"]))
    # Public: RSA 2048, the key in PKCS#1 ("RSA PRIVATE KEY"), cert-manager's default for RSA.
    openssl("genrsa", "-traditional", "-out", str(files["public.key"]), "2048")
    openssl("req", "-new", "-key", str(files["public.key"]), "-subj", "/CN=switchboard.example.test", "-out", str(d / "public.csr"))
    openssl("x509", "-req", "-in", str(d / "public.csr"), "-CA", str(files["ca.crt"]), "-CAkey", str(files["ca.key"]),
            "-CAcreateserial", "-days", "2", "-extfile", server, "-out", str(files["public.crt"]))
    # Another CA's certificate, with the same usages: the cluster must refuse it.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=switchboard-cluster", "-keyout", str(files["rogue.key"]), "-out", str(files["rogue.crt"]),
            "-addext", "extendedKeyUsage=serverAuth,clientAuth", "-addext", "subjectAltName=DNS:switchboard-cluster")
    read = lambda n: files[n].read_bytes()  # noqa: E731
    secrets = {
        "sb-cluster-tls": {"tls.crt": read("cluster.crt"), "tls.key": read("cluster.key"), "ca.crt": read("ca.crt")},
        "sb-public-tls": {"tls.crt": read("public.crt"), "tls.key": read("public.key")},
    }
    return secrets, files


def cluster_tls_answer(pod: Pod, ca: Path, cert: Path | None, key: Path | None) -> str:
    """What the cluster port of `pod` does for a TLS client presenting `cert` (or none): "h2" when
    it completes the handshake and answers the HTTP/2 preface with SETTINGS, else the error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection((pod.ip, pod.cluster_port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="switchboard-cluster") as s:
            # Client preface and an empty SETTINGS frame; a server answers with its SETTINGS (type 4).
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            head = s.recv(9)
            if len(head) >= 4 and head[3] == 4:
                return "h2"
            return f"answered {head!r}"
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"


def check_cluster_tls(f: Failures, pod: Pod, files: dict[str, Path]) -> None:
    answer = cluster_tls_answer(pod, files["ca.crt"], files["cluster.crt"], files["cluster.key"])
    f.check(answer == "h2", f"{pod.name}: the cluster port does not speak HTTP/2 over TLS to the cluster certificate: {answer}")
    for what, cert, key in (("no client certificate", None, None),
                            ("another CA's certificate", files["rogue.crt"], files["rogue.key"])):
        answer = cluster_tls_answer(pod, files["ca.crt"], cert, key)
        f.check(answer != "h2", f"{pod.name}: the cluster port accepts a TLS client with {what}")


def single_node(workdir: Path) -> Pod:
    """The image's default command: one `serve` node."""
    argv = json.loads(DockerfileParser(path=str(DEPLOY / "Dockerfile")).cmd)
    ip = "127.0.0.41"
    port = common_free_port([ip])
    argv = [re.sub(r"0\.0\.0\.0:\d+", f"{ip}:{port}", a) for a in argv]
    data = workdir / "single"
    data.mkdir()
    argv[argv.index("--data-dir") + 1] = str(data)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return Pod("single", "serve", "switchboard-single", ip, port, [BINARY] + argv, env, "/readyz", 30,
               workdir / "single.log")


# ------------------------------------------------------------------------------ 3. traffic

class WebSocket:
    """Just enough of a WebSocket client (RFC 6455) for text frames."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str], tls: bool = False) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        if tls:
            self.sock = https_context().wrap_socket(self.sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if status.split()[1:2] != ["101"]:
            raise ConnectionError(f"upgrade refused: {status}")

    def _send(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += n.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += n.to_bytes(8, "big")
        mask = os.urandom(4)
        self.sock.sendall(bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_text(self, timeout: float) -> str | None:
        """The next text message, or None when nothing arrives within `timeout`."""
        message = b""
        self.sock.settimeout(timeout)
        while True:
            try:
                b0, b1 = self._read(2)
            except (socket.timeout, TimeoutError):
                return None
            self.sock.settimeout(5)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[2:].decode(errors='replace')}")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send(0x8, (1000).to_bytes(2, "big"))
        except OSError:
            pass
        self.sock.close()


def token(*args: str) -> str:
    return subprocess.run([BINARY, "token", *args], capture_output=True, text=True, check=True).stdout.strip()


def connect_client(f: Failures, where: str, key: str, pod: Pod) -> WebSocket | None:
    """A SignalR client (JSON protocol) on hub `chat` of `pod`, negotiated and past its handshake."""
    cs = f"Endpoint={pod.base};AccessKey={key};Version=1.0;"
    client = json.loads(token("--connection-string", cs, "--hub", "chat", "--user", "live-check", "--json"))
    auth = {"Authorization": f"Bearer {client['accessToken']}"}
    status, body = http("POST", f"{pod.base}/client/negotiate?hub=chat&negotiateVersion=1", b"", auth)
    if not f.check(status == 200, f"{where}: negotiate on {pod.name} answered {status} {body[:200]}"):
        return None
    conn = json.loads(body)["connectionToken"]
    try:
        ws = WebSocket(pod.ip, pod.http_port, f"/client/?hub=chat&id={urllib.parse.quote(conn, safe='')}", auth,
                       tls=pod.scheme == "https")
    except (OSError, ConnectionError) as e:
        f.fail(f"{where}: WebSocket to {pod.name}: {e}")
        return None
    try:
        ws.send_text('{"protocol":"json","version":1}\x1e')
        handshake = ws.recv_text(5)
    except (OSError, ConnectionError) as e:
        handshake = f"error: {e}"
    if not f.check(handshake is not None and handshake.startswith("{}"), f"{where}: handshake answered {handshake!r}"):
        ws.close()
        return None
    return ws


def delivered_across(f: Failures, where: str, key: str, sender: Pod, receiver: Pod) -> None:
    """A client on `receiver` gets a REST broadcast sent to `sender`."""
    cs_sender = f"Endpoint={sender.base};AccessKey={key};Version=1.0;"
    ws = connect_client(f, where, key, receiver)
    if ws is None:
        return
    try:
        url = f"{sender.base}/api/hubs/chat/:send?api-version=2022-06-01"
        rest = {"Authorization": f"Bearer {token('--connection-string', cs_sender, '--rest', url, '--only', 'token')}",
                "Content-Type": "application/json"}
        nonce = f"live-check {time.time()}"
        body = json.dumps({"target": "message", "arguments": [nonce]}).encode()
        deadline = time.monotonic() + 20
        got = False
        while not got and time.monotonic() < deadline:
            status, answer = http("POST", url, body, rest)
            if not f.check(status == 202, f"{where}: broadcast on {sender.name} answered {status} {answer[:200]}"):
                return
            until = time.monotonic() + 1
            while not got and time.monotonic() < until:
                text = ws.recv_text(max(0.05, until - time.monotonic()))
                for record in (text or "").split("\x1e"):
                    if record and json.loads(record).get("arguments") == [nonce]:
                        got = True
        f.check(got, f"{where}: the client on {receiver.name} did not receive a broadcast sent to {sender.name}")
    except (OSError, ConnectionError, ValueError) as e:
        f.fail(f"{where}: {e}")
    finally:
        ws.close()


class UpstreamStub:
    """The app's upstream: records every event POSTed to it (path and headers) and answers 200, or
    500 for paths under a prefix in `failing`."""

    FUNCTIONS_KEY = "live-functions-key"

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, str]]] = []
        self.failing: set[str] = set()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the gateways' pooled client expects

            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with stub.lock:
                    stub.events.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                    fail = any(self.path.startswith(prefix) for prefix in stub.failing)
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def template(self, prefix: str) -> str:
        """A URL template under /<prefix>/, with a key in its query string as Azure Functions has it."""
        return f"http://127.0.0.1:{self.port}/{prefix}/{{hub}}/{{category}}/{{event}}?code={self.FUNCTIONS_KEY}"

    def seen(self, path: str) -> list[dict[str, str]]:
        """Headers of the events POSTed to `path` (without its query string)."""
        with self.lock:
            return [h for p, h in self.events if p.split("?", 1)[0] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_upstream_events(f: Failures, where: str, stub: UpstreamStub, prefix: str, key: str, pod: Pod) -> None:
    """After a client came and went on `pod`: its connected and disconnected events reached the
    upstream at the template's URL (key in the query kept), signed with the access key, and the
    pod counts them as ok."""
    for event in ("connected", "disconnected"):
        path = f"/{prefix}/chat/connections/{event}"
        if not f.check(wait_until(lambda path=path: bool(stub.seen(path)), 10),
                       f"{where}: the upstream received no {event} event at {path} from {pod.name}"):
            continue
        with stub.lock:
            queries = [p.split("?", 1)[1] if "?" in p else "" for p, _ in stub.events if p.startswith(path)]
        f.check(all(q == f"code={UpstreamStub.FUNCTIONS_KEY}" for q in queries),
                f"{where}: the {event} URLs lost the template's query string: {queries}")
        for h in stub.seen(path):
            mac = hmac.new(key.encode(), h.get("x-asrs-connection-id", "").encode(), hashlib.sha256).hexdigest()
            f.check(f"sha256={mac}" in h.get("x-asrs-signature", "").split(","),
                    f"{where}: the {event} event is not signed with the access key: {h.get('x-asrs-signature')!r}")
            f.check(h.get("x-asrs-hub") == "chat" and h.get("x-asrs-category") == "connections"
                    and h.get("x-asrs-event") == event, f"{where}: the {event} event's headers: {h}")

    def ok_count() -> float:
        samples = parse_exposition(scrape(pod))[2].get("switchboard_upstream_requests_total", [])
        return sum(v for labels, v in samples if labels.get("category") == "connections" and labels.get("outcome") == "ok")
    f.check(wait_until(lambda: ok_count() >= 2, 10),
            f"{where}: {pod.name} counts {ok_count()} ok upstream connection events, expected at least 2")


# ------------------------------------------------------------------------------ 4. metrics

def scrape(pod: Pod) -> str:
    status, text = http("GET", f"{pod.base}/metrics")
    return text if status == 200 else ""


def check_metrics(f: Failures, pods: list[Pod]) -> None:
    table = load_metric_table()
    for pod in pods:
        text = scrape(pod)
        if not f.check(bool(text), f"{pod.name}: GET /metrics failed"):
            continue
        types, names, _ = parse_exposition(text)
        for m in table.values():
            series = f"{m.name}_bucket" if m.kind == "histogram" else m.name
            present = series in names
            if m.with_redis:
                # The live cluster runs the Raft engine: no process of it is on Redis.
                f.check(not present, f"{pod.name} ({pod.kind}) exports {m.name}, a Redis engine metric")
            elif m.with_upstream and m.exported_by(pod.kind) and not pod.upstream:
                f.check(not present, f"{pod.name} ({pod.kind}) exports {m.name} without an upstream")
            elif m.exported_by(pod.kind):
                if present or not m.on_event:
                    f.check(present, f"{m.name} is not exported by {pod.name} ({pod.kind})")
                if present:
                    f.check(types.get(m.name) == m.kind, f"{m.name} is a {types.get(m.name)} on {pod.name}, expected a {m.kind}")
            else:
                f.check(not present, f"{pod.name} ({pod.kind}) exports {m.name}: add {pod.kind} to its line in metric_names.txt")
        unknown = {n for n in types if n.startswith("switchboard_")} - set(table)
        f.check(not unknown, f"{pod.name} exports metrics missing from metric_names.txt: {sorted(unknown)}")


# --------------------------------------------------------------------------- 5. Prometheus

class Prometheus:
    def __init__(self, workdir: Path, pods: list[Pod]) -> None:
        jobs: dict[str, list[str]] = {}
        schemes: dict[str, set[str]] = {}
        for p in pods:
            jobs.setdefault(p.job, []).append(p.target)
            schemes.setdefault(p.job, set()).add(p.scheme)
        configs = []
        for job, targets in jobs.items():
            if len(schemes[job]) != 1:
                raise RuntimeError(f"job {job} mixes schemes {schemes[job]}: one ServiceMonitor endpoint cannot scrape it")
            c = {"job_name": job, "static_configs": [{"targets": targets, "labels": {"namespace": "default"}}]}
            if schemes[job] == {"https"}:
                # As the chart's ServiceMonitor without a tlsConfig of the user's.
                c |= {"scheme": "https", "tls_config": {"insecure_skip_verify": True}}
            configs.append(c)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": configs,
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = common_free_port(["127.0.0.1"])
        self.base = f"http://127.0.0.1:{port}"
        self.targets = len(pods)
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def query(self, expr: str) -> tuple[bool, list[dict] | str]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        status, body = http("GET", url)
        try:
            answer = json.loads(body)
        except ValueError:
            return False, f"HTTP {status}: {body[:200]}"
        if answer.get("status") != "success":
            return False, answer.get("error", body[:200])
        return True, answer["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        url = f"{self.base}/api/v1/label/{label}/values?{urllib.parse.urlencode({'match[]': match})}"
        status, body = http("GET", url)
        return json.loads(body).get("data", []) if status == 200 else []

    def up_count(self) -> int:
        ok, result = self.query("count(up == 1)")
        return int(float(result[0]["value"][1])) if ok and result else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def dashboard_queries() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(panel label, expression) of every panel query, and (variable, label_values query)."""
    dash = json.loads(DASHBOARD.read_text())

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    def concrete(expr: str) -> str:
        return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$job", ".*").replace("$instance", ".*")

    queries = [(f"panel '{p['title']}' query {t['refId']}", concrete(t["expr"]))
               for p in walk(dash["panels"]) for t in p.get("targets", [])]
    variables = []
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            variables.append((v["name"], concrete(q)))
    return queries, variables


def alert_rules() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def check_prometheus(f: Failures, prom: Prometheus, pods: list[Pod]) -> None:
    if not f.check(wait_until(lambda: http("GET", f"{prom.base}/-/ready")[0] == 200, 60),
                   "Prometheus did not become ready"):
        return
    if not f.check(wait_until(lambda: prom.up_count() == prom.targets, 60),
                   f"Prometheus does not see every target up ({prom.up_count()} of {prom.targets})"):
        return
    time.sleep(12)  # a full rate window of samples

    present: set[str] = {"up"}
    for p in pods:
        present |= parse_exposition(scrape(p))[1]
    queries, variables = dashboard_queries()
    for label, expr in queries:
        ok, result = prom.query(expr)
        if not f.check(ok, f"{label}: Prometheus rejected `{expr}`: {result}"):
            continue
        needed = referenced_series(expr)
        if needed <= present:
            f.check(bool(result), f"{label}: no data although {sorted(needed)} are exported: `{expr}`")
    jobs = sorted({p.job for p in pods})
    for name, q in variables:
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not f.check(m is not None, f"variable {name}: not label_values(...)"):
            continue
        got = prom.label_values(m.group(2), m.group(1))
        want = jobs if name == "job" else sorted(p.target for p in pods)
        f.check(sorted(got) == want, f"variable {name}: {sorted(got)} != {want}")

    for alert, expr in alert_rules().items():
        ok, result = prom.query(expr)
        if f.check(ok, f"{alert}: Prometheus rejected its expression: {result}"):
            f.check(result == [], f"{alert}: its expression holds in a healthy cluster: {result}")


def holds(prom: Prometheus, alert: str, **labels: str) -> Callable[[], bool]:
    expr = alert_rules()[alert]

    def check() -> bool:
        ok, result = prom.query(expr)
        return ok and any(all(r["metric"].get(k) == v for k, v in labels.items()) for r in result)
    return check


def check_faults(f: Failures, prom: Prometheus, cluster: list[Pod], key: str, stub: UpstreamStub) -> None:
    gateways = [p for p in cluster if p.kind == "gateway"]
    voters = [p for p in cluster if p.kind == "store"]
    survivor, victim = gateways[0], gateways[1]

    # The cluster's upstream answers 500: a client's connected and disconnected events fail.
    stub.failing.add(f"/{CLUSTER_UPSTREAM}/")
    ws = connect_client(f, "upstream failing", key, survivor)
    if ws is not None:
        ws.close()
    say(f"the cluster's upstream answers 500; a client came and went on {survivor.name}")
    f.check(wait_until(holds(prom, "SwitchboardUpstreamFailing", job=survivor.job), 30),
            f"SwitchboardUpstreamFailing: its expression does not hold for {survivor.job} with its upstream answering 500")
    stub.failing.clear()

    victim.kill()
    say(f"killed {victim.name}")
    f.check(wait_until(holds(prom, "SwitchboardGatewayDown", job=victim.job, instance=victim.target), 30),
            f"SwitchboardGatewayDown: its expression does not hold for the killed {victim.name}")
    f.check(wait_until(holds(prom, "SwitchboardPeerStreamDown", instance=survivor.target), 30),
            f"SwitchboardPeerStreamDown: its expression does not hold on {survivor.name} after its peer was killed")

    def leader() -> Pod | None:
        for v in voters:
            samples = parse_exposition(scrape(v))[2].get("switchboard_raft_is_leader", [])
            if any(value == 1 for _, value in samples):
                return v
        return None
    first = leader()
    if not f.check(first is not None, "no voter says it is the Raft leader"):
        return
    second = next(v for v in voters if v is not first)
    last = next(v for v in voters if v is not first and v is not second)
    first.kill()
    second.kill()
    say(f"killed {first.name} (the Raft leader) and {second.name}")
    f.check(wait_until(holds(prom, "SwitchboardNoRaftLeader", job=last.job), 60),
            f"SwitchboardNoRaftLeader: its expression does not hold with only {last.name} left")

    last.kill()
    say(f"killed {last.name}")
    f.check(wait_until(holds(prom, "SwitchboardGatewayStoreWatchDown", instance=survivor.target), 30),
            f"SwitchboardGatewayStoreWatchDown: its expression does not hold on {survivor.name} with every voter down")


# ----------------------------------------------------------------------------------- main

def single_key(pod: Pod) -> str:
    """The key a `serve` node generated into its data dir (from the connection string it wrote)."""
    data = Path(pod.argv[pod.argv.index("--data-dir") + 1])
    m = re.search(r"AccessKey=([^;]+)", (data / "connection-string").read_text())
    return m.group(1) if m else ""


def exercise(f: Failures, cluster: Install, all_in_one: Install, single: Pod, workdir: Path,
             pki: dict[str, Path] | None, stub: UpstreamStub) -> Prometheus | None:
    """Steps 2 to 5 (stops at the first step that fails); returns the Prometheus it started."""
    pods = cluster.pods + all_in_one.pods + [single]
    for p in pods:
        p.start()
    for p in pods:
        ready = wait_until(lambda p=p: http("GET", p.base + p.ready_path)[0] == 200 or not p.alive(), READY_TIMEOUT)
        if f.check(ready and p.alive(), f"{p.name} ({p.kind}) did not become ready (GET {p.ready_path}):\n{p.tail()}"):
            f.check(http("GET", f"{p.base}/api/health")[0] == 200, f"{p.name}: GET /api/health is not 200")
    if f.items:
        return None
    say(f"ready: {', '.join(f'{p.name} ({p.kind}, {p.base})' for p in pods)}")
    if pki:
        for p in all_in_one.pods:
            check_cluster_tls(f, p, pki)
        if f.items:
            return None
        say("allInOne cluster ports: HTTP/2 over TLS for the cluster certificate, refused without one or with another CA's")
    for v in (p for p in pods if p.kind == "store"):
        for path in ("/api/hubs/chat/:send?api-version=2022-06-01", "/client/negotiate?hub=chat"):
            status, _ = http("POST", v.base + path, b"{}")
            f.check(status == 404, f"{v.name}: a store voter answers POST {path} with {status}, expected 404")

    gateways = [p for p in cluster.pods if p.kind == "gateway"]
    delivered_across(f, "cluster", cluster.key, gateways[0], gateways[1])
    delivered_across(f, "allInOne", all_in_one.key, all_in_one.pods[0], all_in_one.pods[1])
    delivered_across(f, "single node", single_key(single), single, single)
    say("a client on another gateway / serve node received each REST broadcast")
    check_upstream_events(f, "cluster", stub, CLUSTER_UPSTREAM, cluster.key, gateways[1])
    check_upstream_events(f, "allInOne", stub, ALL_IN_ONE_UPSTREAM, all_in_one.key, all_in_one.pods[1])
    if f.items:
        return None
    say("the upstream received each client's connected and disconnected events, signed with the access key")
    check_metrics(f, pods)
    if f.items:
        return None
    say("every process exports the metrics metric_names.txt lists for it")

    if not shutil.which("prometheus"):
        print("  note: no prometheus binary (Debian package prometheus): queries and alert expressions not evaluated")
        return None
    prom = Prometheus(workdir, pods)
    check_prometheus(f, prom, pods)
    if f.items:
        return prom
    say("Prometheus: every dashboard query and variable answers; no alert expression holds")
    check_faults(f, prom, cluster.pods, cluster.key, stub)
    cluster_jobs = {p.job for p in cluster.pods}
    for alert, expr in alert_rules().items():
        ok, result = prom.query(expr)
        bad = [r["metric"] for r in (result if ok else []) if r["metric"].get("job") not in cluster_jobs]
        f.check(not bad, f"{alert}: holds outside the cluster the faults were injected into: {bad}")
    return prom


def main() -> None:
    global BINARY
    f = Failures("live")
    BINARY = str(Path(sys.argv[1]).resolve())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = helm.Chart.load(str(CHART))
    check_flags(f, BINARY, chart, defaults)
    if not f.items:
        say("flags: the chart's command lines and variables are the binary's")

    global PUBLIC_CA
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-live-"))
    # The cluster's upstream comes from the chart's templates, the allInOne one from an existing
    # Secret; both reach the same stub under their own path.
    stub = UpstreamStub()
    cluster_values = {"upstream": {"templates": [{"urlTemplate": stub.template(CLUSTER_UPSTREAM), "hubPattern": "*"}],
                                   "timeout": 5}}
    cluster = Install(chart, cluster_values, "switchboard", 11, workdir / "cluster")
    upstream_secret = {"sb-upstream": {"config.json": json.dumps(
        {"templates": [{"urlTemplate": stub.template(ALL_IN_ONE_UPSTREAM)}]}).encode()}}
    upstream_values = {"upstream": {"existingSecret": "sb-upstream", "secretKey": "config.json"}}
    pki: dict[str, Path] | None = None
    if shutil.which("openssl"):
        tls_secrets, pki = make_pki(workdir)
        PUBLIC_CA = str(pki["ca.crt"])
        secure = {"mode": "allInOne", "clusterKey": {"value": "live-cluster-key-new,live-cluster-key-old"},
                  "clusterTLS": {"enabled": True, "secretName": "sb-cluster-tls"},
                  "tls": {"enabled": True, "secretName": "sb-public-tls"}, **upstream_values}
        all_in_one = Install(chart, secure, "sb", 31, workdir / "allinone", tls_secrets | upstream_secret)
    else:
        print("  note: no openssl: the allInOne install runs without cluster key and TLS")
        all_in_one = Install(chart, {"mode": "allInOne", **upstream_values}, "sb", 31, workdir / "allinone", upstream_secret)
    single = single_node(workdir)
    pods = cluster.pods + all_in_one.pods + [single]
    prom: Prometheus | None = None
    try:
        prom = exercise(f, cluster, all_in_one, single, workdir, pki, stub)
    finally:
        stopped = []
        for p in pods:
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
                stopped.append(p)
            elif p.proc is not None and not p.killed:
                f.fail(f"{p.name} had exited with status {p.proc.returncode}:\n{p.tail()}")
        for p in stopped:
            try:
                code = p.proc.wait(timeout=p.grace)
                f.check(code == 0, f"{p.name} exited with status {code} on SIGTERM:\n{p.tail()}")
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
                f.fail(f"{p.name} did not stop within {p.grace} s of SIGTERM:\n{p.tail()}")
        if prom:
            prom.stop()
        stub.stop()
        if f.items:
            print(f"  logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    f.finish()


if __name__ == "__main__":
    main()
