"""Benchmark: the embedded router against HAProxy 2.6, both in front of the same nginx, pinned to cores.

Where the kernel puts wrk, nginx and the proxy on two cores decides the figure (0.30 of HAProxy
one day, 0.7 another), so every process is pinned with ``taskset``: the proxy under test alone on
one core (``--proxy-cpu``), wrk and nginx (one worker) on the other (``--load-cpu``). HAProxy runs
``nbthread 1``, as the router runs one event loop (uvloop); both keep connections to nginx alive.

Rows: 10, 50 and 200 connections; a small response (17 bytes) and a 64 KiB one (a static file);
keep-alive, and a new connection per request (wrk sends ``Connection: close``). Rounds are
interleaved: each round runs every row once through each proxy (the order of the two alternates
between rounds), so that a machine whose speed drifts (a shared VM) hits both alike. Per row:
the median requests/s and their spread (min-max) over the rounds, the median p99, and the ratio
router / HAProxy taken per round and its median (a ratio of two runs a few seconds apart is steadier
than a ratio of two medians). The load average before and after is printed: the figures mean
little on a loaded machine; `bench/router_instructions.py` counts instructions, which do not
depend on the load. Every process started here is stopped here, by pid. Traffic stays on 127.0.0.1.

    .venv/bin/python bench/router.py [--seconds 5] [--rounds 3] [--connections 10,50,200]
                                     [--sizes small,64k] [--modes keep-alive,close] [--direct]
                                     [--baseline DIR]

``--baseline DIR`` runs a second router from another herdsman tree (``git archive COMMIT herdsman |
tar -x -C DIR``) in the same rounds, so a change to the router is measured against what it replaced
under the same load.

``--workers 2`` adds rows on *both* cores, unlike the pinned ones: the router with `[router]
workers = 2` (two processes on the listener, SO_REUSEPORT) against HAProxy with ``nbthread 2``,
in the same rounds, with wrk and nginx unpinned beside them (four processes share two cores: the
figure says how the two proxies use a whole machine, not what one core does).
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

from peers import router_argv

from herdsman.router.client import RouterClient

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = / {{ return 200 "hello from nginx\\n"; }}
    location / {{ root {tmp}/www; }}
  }}
}}
"""
HAPROXY_CONF = """
global
  nbthread {threads}
  maxconn 8192
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
PATHS = {"small": "/", "64k": "/64k.bin"}
ROUTER, HAPROXY, DIRECT, BASELINE = "herdsman router", "HAProxy 2.6", "nginx (direct)", "router (baseline)"
ROUTER_BOTH, HAPROXY_BOTH = "router, 2 workers (both cores)", "HAProxy nbthread 2 (both cores)"


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


def wrk(
    cpu: str | None, port: int, path: str, seconds: int, connections: int, close: bool
) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(
        pinned(cpu, [*argv, f"http://127.0.0.1:{port}{path}"]), capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "errors": int(errors.group(1)) if errors else 0,
        # connect, read and write errors and timeouts: requests wrk saw fail
        "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    }


def start(processes: list[subprocess.Popen[bytes]], argv: list[str]) -> None:
    processes.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))


def start_router(
    processes: list[subprocess.Popen[bytes]],
    cpu: str | None,
    tmp: Path,
    port: int,
    backend: int,
    code: Path | None,
    workers: int = 1,
) -> None:
    """A router process (of the herdsman tree ``code`` if given, e.g. a `git archive` of an older commit)."""
    tmp = tmp / f"router-{port}"
    tmp.mkdir()
    control = tmp / "router.sock"
    argv = router_argv(control, tmp / "state.json", workers)
    env = dict(os.environ, PYTHONPATH=str(code)) if code is not None else None
    # cwd: not this checkout, which `python -m` would put before PYTHONPATH on sys.path
    processes.append(subprocess.Popen(pinned(cpu, argv), env=env, cwd=tmp))
    for _ in range(600):  # a parent's socket comes once its workers are up
        if control.exists():
            break
        time.sleep(0.05)
    client = RouterClient(control)
    client.call_now({"op": "set_routes", "routes": [{"name": "b/web", "listen": f"127.0.0.1:{port}"}]})
    client.call_now(
        {"op": "set_pool", "route": "b/web", "backends": [{"id": "nginx", "address": f"127.0.0.1:{backend}"}]}
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def table(
    runs: dict[tuple[int, str, str], dict[str, list[dict[str, float]]]],
    rows: list[tuple[int, str, str]],
    names: list[str],
    router: str,
    haproxy: str,
) -> list[dict[str, object]]:
    """One table: a row per (connections, size, mode), a column per proxy of ``names``, and the
    ratio ``router`` / ``haproxy`` per round and its median."""
    print(
        "| connections | response | connection | "
        + " | ".join(f"{n} req/s (spread)" for n in names)
        + " | router p99 | HAProxy p99 | router / HAProxy (per round) | median | non-2xx / socket errors |"
    )
    print("| ---: | --- | --- |" + " ---: |" * len(names) + " ---: | ---: | --- | ---: | ---: |")
    summary: list[dict[str, object]] = []
    for row in rows:
        by_name = runs[row]
        connections, size, mode = row
        rps = {n: [r["rps"] for r in by_name[n]] for n in names}
        ratios = [a / b for a, b in zip(rps[router], rps[haproxy], strict=True)]
        errors = ", ".join(
            f"{sum(r['errors'] for r in by_name[n]):.0f}/{sum(r['socket_errors'] for r in by_name[n]):.0f}"
            for n in names
        )
        cells = " | ".join(f"{statistics.median(rps[n]):.0f} ({spread(rps[n])})" for n in names)
        p99 = {n: statistics.median(r["p99_ms"] for r in by_name[n]) for n in names}
        print(
            f"| {connections} | {size} | {mode} | {cells} | {p99[router]:.2f} ms | {p99[haproxy]:.2f} ms "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} | **{statistics.median(ratios):.2f}** "
            f"| {errors} |"
        )
        summary.append(
            {"row": row, "runs": {n: by_name[n] for n in names}, "ratio": statistics.median(ratios)}
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--connections", default="10,50,200")
    parser.add_argument("--sizes", default="small,64k", help="small and/or 64k")
    parser.add_argument("--modes", default="keep-alive,close", help="keep-alive and/or close")
    parser.add_argument("--direct", action="store_true", help="also wrk straight to nginx")
    parser.add_argument(
        "--baseline", type=Path, help="also run the router of this herdsman tree (a git archive)"
    )
    parser.add_argument("--proxy-cpu", default="0", help="the core of the proxy under test ('' : no pinning)")
    parser.add_argument("--load-cpu", default="1", help="the core of wrk and nginx")
    parser.add_argument(
        "--workers", type=int, default=0, help="also N router workers against HAProxy nbthread N, unpinned"
    )
    args = parser.parse_args()
    for tool in ("wrk", "haproxy", "nginx", "taskset"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is needed (make test installs it when run as root)")
    proxy_cpu = args.proxy_cpu or None
    load_cpu = args.load_cpu if proxy_cpu else None
    rows = [
        (int(c), size, mode)
        for size in args.sizes.split(",")
        for mode in args.modes.split(",")
        for c in args.connections.split(",")
    ]
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-router-"))
    processes: list[subprocess.Popen[bytes]] = []
    runs: dict[tuple[int, str, str], dict[str, list[dict[str, float]]]] = {row: {} for row in rows}
    try:
        os.chmod(tmp, 0o755)  # nginx's workers read the file as another user
        (tmp / "www").mkdir()
        (tmp / "www" / "64k.bin").write_bytes(os.urandom(65536))
        os.chmod(tmp / "www" / "64k.bin", 0o644)
        nginx_port, router_port, haproxy_port = free_port(), free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
        start(processes, pinned(load_cpu, ["nginx", "-c", str(tmp / "nginx.conf")]))
        (tmp / "haproxy.cfg").write_text(
            HAPROXY_CONF.format(port=haproxy_port, backend=nginx_port, threads=1)
        )
        start(processes, pinned(proxy_cpu, ["haproxy", "-f", str(tmp / "haproxy.cfg")]))
        start_router(processes, proxy_cpu, tmp, router_port, nginx_port, None)
        paths = {ROUTER: router_port, HAPROXY: haproxy_port}
        cpus = {ROUTER: load_cpu, HAPROXY: load_cpu}  # where wrk runs for each
        if args.workers > 1:
            both = tmp / "haproxy-both.cfg"
            paths[HAPROXY_BOTH], paths[ROUTER_BOTH] = free_port(), free_port()
            both.write_text(
                HAPROXY_CONF.format(port=paths[HAPROXY_BOTH], backend=nginx_port, threads=args.workers)
            )
            start(processes, ["haproxy", "-f", str(both)])
            start_router(processes, None, tmp, paths[ROUTER_BOTH], nginx_port, None, args.workers)
            cpus[HAPROXY_BOTH] = cpus[ROUTER_BOTH] = None
        if args.baseline is not None:
            paths[BASELINE], cpus[BASELINE] = free_port(), load_cpu
            start_router(processes, proxy_cpu, tmp, paths[BASELINE], nginx_port, args.baseline.resolve())
        if args.direct:
            paths[DIRECT], cpus[DIRECT] = nginx_port, load_cpu
        for name, port in paths.items():
            wait_port(port)
            wrk(cpus[name], port, "/", 1, 50, False)  # warm up
        for number in range(args.rounds):
            pairs = [(ROUTER, HAPROXY)] + ([(ROUTER_BOTH, HAPROXY_BOTH)] if args.workers > 1 else [])
            paired = [name for pair in pairs for name in (pair if number % 2 == 0 else pair[::-1])]
            order = paired + [name for name in paths if name not in paired]
            ratios, both_ratios = [], []
            for row in rows:
                connections, size, mode = row
                for name in order:
                    result = wrk(
                        cpus[name], paths[name], PATHS[size], args.seconds, connections, mode == "close"
                    )
                    runs[row].setdefault(name, []).append(result)
                ratios.append(runs[row][ROUTER][-1]["rps"] / runs[row][HAPROXY][-1]["rps"])
                if args.workers > 1:
                    both_ratios.append(runs[row][ROUTER_BOTH][-1]["rps"] / runs[row][HAPROXY_BOTH][-1]["rps"])
            print(
                f"round {number + 1}: router / HAProxy "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ("; both cores " + ", ".join(f"{r:.2f}" for r in both_ratios) if both_ratios else ""),
                file=sys.stderr,
            )
    finally:
        stop(processes)
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    pinning = f"proxy on cpu {proxy_cpu}, wrk and nginx on cpu {load_cpu}" if proxy_cpu else "nothing pinned"
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{pinning}; wrk -t1 -d{args.seconds}s, {args.rounds} interleaved rounds; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    both = {ROUTER_BOTH, HAPROXY_BOTH}
    summary = table(runs, rows, [n for n in runs[rows[0]] if n not in both], ROUTER, HAPROXY)
    if args.workers > 1:
        print(
            f"\nBoth cores, nothing pinned (unlike the rows above): the router with {args.workers} workers "
            f"(SO_REUSEPORT) against HAProxy nbthread {args.workers}; wrk and nginx share the same cores"
        )
        summary += table(runs, rows, [ROUTER_BOTH, HAPROXY_BOTH], ROUTER_BOTH, HAPROXY_BOTH)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
