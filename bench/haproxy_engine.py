"""Benchmark: HAProxy run by herdsman (`[router] engine = "haproxy"`) against a hand-configured
HAProxy, both in front of the same nginx, to see what herdsman's orchestration costs per request
(issue 12 asks for >= 0.95 of the throughput and p99 within 10%).

Pinned as bench/router.py is (where the kernel puts the processes on two cores decided the figure):
both HAProxy processes alone on one core (``--proxy-cpu``; HAProxy then starts one thread, its
default being one per core it may use), wrk and nginx on the other (``--load-cpu``); ``--proxy-cpu
''`` runs nothing pinned. herdsman's config adds what its guarantees need (`retry-on`,
`disable-l7-retry` for non-idempotent methods, per-route timeouts) and its pool is set through the
runtime API (`add server`). wrk (1 thread, keep-alive) runs interleaved rounds against each, the
order alternating between rounds; medians are printed with the ratio. Every process started here
is stopped here, by pid. Traffic stays on 127.0.0.1.

    .venv/bin/python bench/haproxy_engine.py [--seconds 10] [--connections 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from herdsman.router.haproxy.engine import HaproxyPools

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
HAND_CONF = """
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
{rules}  server nginx 127.0.0.1:{backend}
"""
# herdsman's guarantees, as a hand-configured HAProxy would spell them (router/haproxy/config.py):
# the same work, so that what is left between the two is what running it costs
SAME_RULES = """  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  http-request disable-l7-retry unless { method GET HEAD OPTIONS PUT DELETE TRACE }
"""
HAND = "HAProxy, hand-configured"
HAND_SAME = "HAProxy, hand-configured with herdsman's retry rules"
OURS = "HAProxy run by herdsman"


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


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", cpu, *argv]


def wrk(port: int, seconds: int, connections: int, cpu: str | None = None) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(
        pinned(cpu, argv),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--proxy-cpu", default="0", help="the core of both HAProxys ('': no pinning)")
    parser.add_argument("--load-cpu", default="1", help="the core of wrk and nginx")
    args = parser.parse_args()
    proxy_cpu = args.proxy_cpu or None
    load_cpu = args.load_cpu if proxy_cpu else None
    for tool in ("wrk", "haproxy", "nginx", *(["taskset"] if proxy_cpu else [])):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (make test installs it when run as root)")
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-haproxy-"))
    processes: list[subprocess.Popen[bytes]] = []
    managed = HaproxyPools(tmp / ".herd")
    try:
        nginx_port, managed_port = free_port(), free_port()
        paths = {HAND: free_port(), HAND_SAME: free_port(), OURS: managed_port}
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
        processes.append(
            subprocess.Popen(
                pinned(load_cpu, ["nginx", "-c", str(tmp / "nginx.conf")]), stderr=subprocess.DEVNULL
            )
        )
        hand_pids: dict[str, int] = {}
        for name, rules in ((HAND, ""), (HAND_SAME, SAME_RULES)):
            config = tmp / f"hand{len(hand_pids)}.cfg"
            config.write_text(HAND_CONF.format(port=paths[name], backend=nginx_port, rules=rules))
            process = subprocess.Popen(
                pinned(proxy_cpu, ["haproxy", "-f", str(config)]), stderr=subprocess.DEVNULL
            )
            processes.append(process)
            hand_pids[name] = process.pid
        route = {"name": "b/web", "listen": f"127.0.0.1:{managed_port}", "first_byte_timeout": 30.0}
        everywhere = os.sched_getaffinity(0)
        if proxy_cpu is not None:  # herdsman starts its HAProxy as our child: it inherits the core
            os.sched_setaffinity(0, {int(proxy_cpu)})
        try:
            asyncio.run(managed.set_routes("b", [route]))
        finally:
            os.sched_setaffinity(0, everywhere)
        asyncio.run(managed.set_pool("b/web", [("nginx", f"127.0.0.1:{nginx_port}", 1)]))
        for port in (nginx_port, *paths.values()):
            wait_port(port)
            wrk(port, 1, args.connections, load_cpu)  # warm up
        worker = asyncio.run(managed.runtime.worker_pid()) or 0
        for name, pid in (*hand_pids.items(), (OURS, worker)):
            threads = len(os.listdir(f"/proc/{pid}/task"))
            print(
                f"{name} HAProxy: {threads} thread(s), cores {sorted(os.sched_getaffinity(pid))}",
                file=sys.stderr,
            )
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for number in range(args.rounds):
            order = list(paths.items()) if number % 2 == 0 else list(reversed(paths.items()))
            for name, port in order:
                rounds[name].append(wrk(port, args.seconds, args.connections, load_cpu))
            last = {name: runs[-1]["rps"] for name, runs in rounds.items()}
            print(
                f"round {number + 1}: herdsman's / hand {last[OURS] / last[HAND]:.2f}, "
                f"/ hand with the same rules {last[OURS] / last[HAND_SAME]:.2f}",
                file=sys.stderr,
            )
    finally:
        managed.stop()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; wrk -t1 -c{args.connections} "
        f"-d{args.seconds}s, median of {args.rounds} interleaved rounds; "
        + (f"HAProxys on core {proxy_cpu}, wrk and nginx on core {load_cpu}" if proxy_cpu else "unpinned")
    )
    print("| path | requests/s | p50 | p99 | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    medians = {}
    for name, runs in rounds.items():
        medians[name] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        m = medians[name]
        errors = sum(int(r["errors"]) for r in runs)
        print(f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms | {errors} |")
    ours = medians[OURS]
    for peer, label in ((HAND_SAME, "hand with the same rules"), (HAND, "hand, minimal")):
        ratios = [o["rps"] / h["rps"] for h, o in zip(rounds[peer], rounds[OURS], strict=True)]
        p99s = [o["p99_ms"] / h["p99_ms"] for h, o in zip(rounds[peer], rounds[OURS], strict=True)]
        print(
            f"\nherdsman's / {label}: throughput per round {', '.join(f'{r:.2f}' for r in ratios)}"
            f" (median {statistics.median(ratios):.2f}); p99 per round {', '.join(f'{r:.2f}' for r in p99s)}"
            f" (median {statistics.median(p99s):.2f}); of the medians: throughput "
            f"{ours['rps'] / medians[peer]['rps']:.2f}, p99 {ours['p99_ms'] / medians[peer]['p99_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
