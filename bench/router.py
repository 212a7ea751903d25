"""Benchmark: the embedded router against HAProxy 2.6, both in front of the same nginx backend.

wrk (1 thread, 50 connections, 10 s, keep-alive) measures requests/s and latency percentiles
straight to nginx, through `python -m herdsman.router`, and through HAProxy (nbthread 1, the same
single core the router's event loop uses), in one run: three rounds, interleaved, so that a
machine whose speed drifts (a shared VM) affects all three alike; prints the medians and ratios. Every
process started here is stopped here, by pid. Traffic stays on 127.0.0.1.

    .venv/bin/python bench/router.py [--seconds 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from herdsman.router.client import RouterClient

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "hello from nginx\\n"; }}
  }}
}}
"""
HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  http-reuse always
  server nginx 127.0.0.1:{backend}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (errors: the total)."""
    out: dict[str, float] = {}
    for key in ("rps", "p50_ms", "p99_ms"):
        out[key] = statistics.median(run[key] for run in runs)
    out["errors"] = sum(run["errors"] for run in runs)
    out["socket_errors"] = "; ".join(str(run["socket_errors"]) for run in runs if run["socket_errors"])  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()
    for tool in ("wrk", "haproxy", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is needed (make test installs it when run as root)")
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-router-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nginx_port, router_port, haproxy_port = free_port(), free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
        processes.append(
            subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")], stderr=subprocess.DEVNULL)
        )
        (tmp / "haproxy.cfg").write_text(HAPROXY_CONF.format(port=haproxy_port, backend=nginx_port))
        processes.append(
            subprocess.Popen(["haproxy", "-f", str(tmp / "haproxy.cfg")], stderr=subprocess.DEVNULL)
        )
        control = tmp / "router.sock"
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "herdsman.router",
                    "--control",
                    str(control),
                    "--state",
                    str(tmp / "state.json"),
                ]
            )
        )
        for _ in range(100):
            if control.exists():
                break
            time.sleep(0.05)
        client = RouterClient(control)
        client.call_now(
            {"op": "set_routes", "routes": [{"name": "b/web", "listen": f"127.0.0.1:{router_port}"}]}
        )
        client.call_now(
            {
                "op": "set_pool",
                "route": "b/web",
                "backends": [{"id": "nginx", "address": f"127.0.0.1:{nginx_port}"}],
            }
        )
        for port in (nginx_port, router_port, haproxy_port):
            wait_port(port)
            wrk(port, 1, args.connections)  # warm up
        paths = {"nginx (direct)": nginx_port, "herdsman router": router_port, "HAProxy 2.6": haproxy_port}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for number in range(args.rounds):  # interleaved, so that a machine that drifts hits all three
            for name, port in paths.items():
                rounds[name].append(wrk(port, args.seconds, args.connections))
            router_rps, haproxy_rps = rounds["herdsman router"][-1]["rps"], rounds["HAProxy 2.6"][-1]["rps"]
            print(f"round {number + 1}: router / HAProxy {router_rps / haproxy_rps:.2f}", file=sys.stderr)
        results = {name: median_of(runs) for name, runs in rounds.items()}
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    direct, router, haproxy = results.values()
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, median of {args.rounds} interleaved rounds"
    )
    print("| path | requests/s | p50 | p99 | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms "
            f"| {r['errors']} {r['socket_errors']} |"
        )
    print(f"\nrouter / HAProxy throughput: {router['rps'] / haproxy['rps']:.2f}")
    print(
        f"p99 added over direct: router {router['p99_ms'] - direct['p99_ms']:.2f} ms, "
        f"HAProxy {haproxy['p99_ms'] - direct['p99_ms']:.2f} ms"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
