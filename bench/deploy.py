"""Benchmark: a rolling deploy of 10 instances of examples/hello under load, on the embedded default.

Reports the deploy's duration and the failed requests of a bounded load (8 concurrent keep-alive
clients through the router, for the length of the deploy), beside the minimum possible: one
instance's start-to-healthy time (median of 5, measured on the same driver) times the number of
rounds the policy needs (max_surge 1, max_unavailable 0: one round per instance).

    .venv/bin/python bench/deploy.py [--replicas 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from herdsman.drivers.base import InstanceSpec, VolumeMount
from herdsman.drivers.process import ProcessDriver
from herdsman.health import probe
from herdsman.image.bake import bake, image_store
from herdsman.router.client import stop_router
from herdsman.spec import load_project
from herdsman.spec.models import HealthCheck

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_to_healthy(project_file: Path, runs: int = 5) -> float:
    project = load_project(project_file)
    digest = bake(project)[0].image.digest
    home = project.root / ".herd"
    driver = ProcessDriver(home, image_store(project))
    check = HealthCheck(interval="20ms", timeout="20ms")  # type: ignore[arg-type]
    times = []
    for n in range(runs):
        spec = InstanceSpec(
            id=f"probe-{n}",
            image=digest,
            labels={"herd.stack": "bench-probe"},
            argv=("python3", "app.py"),
            env={"DATA_DIR": "/data"},
            workdir="/app",
            volumes=(VolumeMount("counter", home / "volumes" / "counter", "/data"),),
        )
        started = time.monotonic()
        state = await driver.start(spec)
        while not (await probe(check, "127.0.0.1", state.port)).ok:
            await asyncio.sleep(0.005)
        times.append(time.monotonic() - started)
        await driver.stop(spec.id, 5)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="herd-bench-deploy-"))
    root = work / "hello"
    shutil.copytree(ROOT / "examples" / "hello", root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    port = free_port()
    text = (root / "herd.toml").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(
        "replicas = 2", f"replicas = {args.replicas}"
    )
    text = text.replace('interval = "500ms"', 'interval = "50ms"').replace(
        'timeout = "500ms"', 'timeout = "50ms"'
    )
    (root / "herd.toml").write_text(text)
    herd = [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml")]
    try:
        s2h = asyncio.run(start_to_healthy(root / "herd.toml"))
        subprocess.run([*herd, "deploy"], check=True, capture_output=True)
        (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()

        async def load() -> None:
            async with httpx.AsyncClient(timeout=10) as http:

                async def worker() -> None:
                    while not stop.is_set():
                        try:
                            response = await http.get(f"http://127.0.0.1:{port}/healthz")
                            counts["ok" if response.status_code == 200 else "failed"] += 1
                        except httpx.HTTPError:
                            counts["failed"] += 1

                await asyncio.gather(*(worker() for _ in range(8)))

        thread = threading.Thread(target=asyncio.run, args=(load(),))
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        subprocess.run([*herd, "deploy"], check=True, capture_output=True)
        duration = time.monotonic() - started
        time.sleep(0.5)
        stop.set()
        thread.join()
    finally:
        subprocess.run([*herd, "down"], capture_output=True)
        stop_router(root / ".herd")
        shutil.rmtree(work, ignore_errors=True)
    minimum = s2h * args.replicas
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| replicas | deploy | start-to-healthy x rounds | ratio | requests | failed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.replicas} | {duration:.2f} s | {s2h * 1000:.0f} ms x {args.replicas} = {minimum:.2f} s "
        f"| {duration / minimum:.2f} | {counts['ok'] + counts['failed']} | {counts['failed']} |"
    )
    print(json.dumps({"deploy_s": duration, "start_to_healthy_s": s2h, "minimum_s": minimum, **counts}))


if __name__ == "__main__":
    main()
