"""Benchmark: how fast a kill -9 is healed, and what a reconcile pass costs at 10,000 instances.

1. examples/hello (2 replicas) under `herd up -d`: kill -9 an instance's application process and
   time until the router's pool is full again with a replacement that passed its health check.
   Peer, in the same run: Docker's own healing, `--restart=always`, for a busybox httpd container
   (host network) whose process gets kill -9: time until it answers again, kills 11 s apart (Docker
   doubles its restart delay, from 100 ms, unless the container ran 10 s). Docker restarts the one
   container in place; herdsman starts a new instance while the router keeps serving.
2. The agent's pure reconcile logic over 10,000 simulated instances (100 services of 100) on the
   in-memory driver: a pass after one crash (plans the one dirty service) against a pass that plans
   every service, as a loop without change tracking would.

    .venv/bin/python bench/heal.py [--trials 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DOCKER_GAP = 11.0
sys.path.insert(0, str(ROOT))

from herdsman.agent.fleet import Fleet, Seen, Want, heal_plan  # noqa: E402
from herdsman.deploy.plan import Policy  # noqa: E402
from herdsman.router.client import RouterClient  # noqa: E402
from tests.helpers import app_pid, free_port, hello_copy, herd, stop_project  # noqa: E402


def herd_heal(trials: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="bench-heal-")) / "hello"
    hello_copy(root, interval="100ms")
    router = RouterClient(root / ".herd" / "run" / "router.sock")
    times = []
    try:
        herd(root, "up", "-d")

        def pool() -> list[str]:
            stats = router.call_now({"op": "stats"})["stats"]["production/web"]
            return [b["instance"] for b in stats["backends"]]

        for _ in range(trials):
            time.sleep(0.5)
            members = pool()
            victim = members[0]
            pid = app_pid(root, victim)
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while True:
                now = pool()
                if len(now) == len(members) and victim not in now:
                    break
                time.sleep(0.002)
            times.append(time.monotonic() - started)
    finally:
        stop_project(root)
        shutil.rmtree(root.parent, ignore_errors=True)
    return times


def docker_heal(trials: int) -> list[float] | None:
    busybox = shutil.which("busybox")
    if shutil.which("docker") is None or busybox is None:
        return None
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return None
    context = Path(tempfile.mkdtemp(prefix="bench-heal-docker-"))
    shutil.copy(busybox, context / "busybox")
    (context / "www").mkdir()
    (context / "www" / "index.html").write_text("ok\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n")
    tag = "herdsman-bench-heal:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True, capture_output=True)
    port = free_port()
    name = f"herdsman-bench-heal-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", "--restart", "always", tag,
         "/bin/busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
        check=True, capture_output=True,
    )  # fmt: skip
    times = []
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(trials):
            for _ in range(500):
                try:
                    httpx.get(url, timeout=0.5)
                    break
                except httpx.HTTPError:
                    time.sleep(0.01)
            time.sleep(DOCKER_GAP)  # Docker doubles its restart delay unless the container ran 10 s
            pid = int(subprocess.check_output(["docker", "inspect", "-f", "{{.State.Pid}}", name]).strip())
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)
            while True:
                try:
                    httpx.get(url, timeout=0.5)
                    break
                except httpx.HTTPError:
                    time.sleep(0.002)
            times.append(time.monotonic() - started)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        shutil.rmtree(context, ignore_errors=True)
    return times


def reconcile_costs(services: int = 100, per_service: int = 100, runs: int = 20) -> tuple[float, float]:
    """Median seconds of (one-crash incremental pass, plan-everything pass) at services*per_service."""
    fleet = Fleet()
    fleet.sync(Seen(f"s{n}-1-{i}", f"s{n}", 1, True) for n in range(services) for i in range(per_service))
    fleet.take_dirty()
    want = Want(1, Policy(replicas=per_service))
    counter = itertools.count()
    incremental, full = [], []
    for run in range(runs):
        victim = Seen(f"s{run}-1-0", f"s{run}", 1, False)
        started = time.perf_counter()
        fleet.observe(victim)
        for service, seen in fleet.take_dirty().items():
            heal_plan(service, seen, want, lambda: f"n{next(counter)}")
        incremental.append(time.perf_counter() - started)
        started = time.perf_counter()
        for service, seen in fleet.services.items():
            heal_plan(service, list(seen.values()), want, lambda: f"n{next(counter)}")
        full.append(time.perf_counter() - started)
        fleet.observe(Seen(f"s{run}-1-0", f"s{run}", 1, True))
        fleet.take_dirty()
    return statistics.median(incremental), statistics.median(full)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    python = platform.python_version()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {python}")
    ours = herd_heal(args.trials)
    print(f"herdsman, kill -9 to full healthy pool: median {statistics.median(ours) * 1000:.0f} ms, "
          f"max {max(ours) * 1000:.0f} ms over {len(ours)} kills")  # fmt: skip
    peer = docker_heal(max(3, args.trials // 2))
    if peer:
        median = statistics.median(peer) * 1000
        print(f"docker --restart=always, kill -9 to answering again: median {median:.0f} ms, "
              f"max {max(peer) * 1000:.0f} ms over {len(peer)} kills, {DOCKER_GAP:.0f} s apart")  # fmt: skip
        print(f"ratio herdsman/docker (median): {statistics.median(ours) / statistics.median(peer):.2f}")
    else:
        print("docker: not available, no peer measured")
    incremental, full = asyncio.run(asyncio.to_thread(reconcile_costs))
    print(f"reconcile at 10,000 instances: one-crash pass {incremental * 1000:.2f} ms, "
          f"plan-everything pass {full * 1000:.1f} ms, ratio {incremental / full:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
