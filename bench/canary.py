"""Benchmark: a bad release under load, as a canary and as a rolling deploy, in the same run.

The release answers 500 to one request in five (and, in the second case, takes 40 ms instead of
1 ms). With `strategy = "canary"` (weights 10 then 100, a 5 s pause) herdsman judges it against the
current release and reverts, twice: against a fresh baseline (new instances of the current release
at the canary's 10%, the default) and against the serving instances (`baseline = "serving"`; the
row says which the verdict used); the peer is the same release rolled out with `strategy = "rolling"`,
which health checks cannot stop (its /healthz is fine), then the same load for the same time.
Reported: the failed share of all requests, requests that failed, and the time to the verdict
(from `herd deploy` to the revert done). Loopback only; a bounded load of 4 keep-alive clients.

    .venv/bin/python bench/canary.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

APP = """
import itertools, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
DELAY = float(os.environ.get("DELAY_MS", "0")) / 1000
CALLS = itertools.count(1)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path != "/healthz":
            time.sleep(DELAY)
        bad = self.path != "/healthz" and FAIL_EVERY and next(CALLS) % FAIL_EVERY == 0
        body = b"failed\\n" if bad else b"ok\\n"
        self.send_response(500 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

TOML = """
[stack]
name = "bench-canary-{strategy}"
[service.web]
command = ["python3", "app.py"]
port = 8000
replicas = 3
env = {{ FAIL_EVERY = "{fail_every}", DELAY_MS = "{delay_ms}" }}
[service.web.image]
base = "host"
copy = [{{ src = "app", dest = "/app" }}]
workdir = "/app"
[service.web.health]
type = "http"
path = "/healthz"
interval = "100ms"
timeout = "100ms"
[service.web.route]
listen = "127.0.0.1:{port}"
[service.web.deploy]
strategy = "{strategy}"
canary_weights = [10, 100]
canary_pause = "5s"
[service.web.canary]
min_requests = 30
baseline = "{baseline}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def herd(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


class Load:
    def __init__(self, url: str, workers: int = 4) -> None:
        self.url, self.workers, self.ok, self.failed = url, workers, 0, 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(workers)]

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                try:
                    if http.get(self.url).status_code == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def one(
    strategy: str, bad: dict[str, int], workdir: Path, baseline: str = "fresh"
) -> tuple[float, int, int, str]:
    """(seconds, failed, requests, the baseline the verdict says it used) of one bad deploy."""
    root = workdir / f"{strategy}-{os.urandom(2).hex()}"
    (root / "app").mkdir(parents=True)
    (root / "app" / "app.py").write_text(APP)
    port = free_port()
    write = lambda **env: (root / "herd.toml").write_text(  # noqa: E731
        TOML.format(
            strategy=strategy, port=port, baseline=baseline, **{"fail_every": 0, "delay_ms": 1, **env}
        )
    )
    write()
    try:
        assert herd(root, "deploy").returncode == 0
        write(**bad)
        with Load(f"http://127.0.0.1:{port}/") as load:
            started = time.monotonic()
            result = herd(root, "deploy")
            took = time.monotonic() - started
            if strategy == "rolling":  # nothing stops it: the same load for as long as the canary took
                time.sleep(max(0.0, CANARY_SECONDS.get(str(bad), took) - took))
        used = ""
        if strategy == "canary":
            assert result.returncode != 0, result.stdout
            CANARY_SECONDS.setdefault(str(bad), took)
            found = re.search(r"\(baseline: (\w+)", result.stdout + result.stderr)
            used = found.group(1) if found else "?"
        return took, load.failed, load.ok + load.failed, used
    finally:
        herd(root, "down")


CANARY_SECONDS: dict[str, float] = {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"# {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    cases = {
        "1 in 5 requests fails": {"fail_every": 5},
        "1 in 5 fails, 40x slower": {"fail_every": 5, "delay_ms": 40},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, bad in cases.items():
            for _ in range(args.rounds):
                CANARY_SECONDS.pop(str(bad), None)
                for strategy, baseline in (("canary", "fresh"), ("canary", "serving"), ("rolling", "")):
                    took, failed, total, used = one(strategy, bad, Path(tmp), baseline or "fresh")
                    what = f"{strategy} ({used})" if used else strategy
                    print(
                        f"{name:28} {what:18} verdict/deploy {took:5.1f}s  failed {failed:5d}"
                        f" of {total:6d}"
                        f" = {failed / max(total, 1):6.2%}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
