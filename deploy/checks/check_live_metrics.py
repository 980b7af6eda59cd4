"""Optional check against a real binary: starts `switchboard serve` on a free loopback port with a
throw-away data dir, reads /metrics, and checks that every gateway and store metric the
dashboard and the alerts rely on (metric_names.txt) is exported under that name and type.
Cluster metrics are reported when missing but do not fail the check: a single serve node has no
peers. Usage: check_live_metrics.py PATH_TO_SWITCHBOARD_BINARY
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from common import Failures, load_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def main() -> None:
    f = Failures("live metrics")
    binary = sys.argv[1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and get(f"{base}/readyz")[0] != 200:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
            f.check(get(f"{base}/api/health")[0] == 200, "GET /api/health did not answer 200")
            f.check(get(f"{base}/readyz")[0] == 200, "GET /readyz did not answer 200 within 60 s")
            get(f"{base}/metrics")  # the first scrape registers the HTTP metrics of the requests above
            status, text = get(f"{base}/metrics")
            f.check(status == 200, f"GET /metrics answered {status}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    types: dict[str, str] = {}
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split()[0])
    for name, kind in load_metrics().items():
        series = f"{name}_bucket" if kind == "histogram" else name
        present = series in names
        if name.startswith("switchboard_cluster_"):
            if not present:
                print(f"  note: {name} is not exported by a single serve node of this binary")
            continue
        if f.check(present, f"{name} is not exported by `switchboard serve`"):
            f.check(types.get(name) == kind, f"{name} is a {types.get(name)}, expected a {kind}")
    f.finish()


if __name__ == "__main__":
    main()
