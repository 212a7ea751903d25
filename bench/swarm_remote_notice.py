"""Benchmark: how soon herdsman notices a task killed on another Swarm node, by the manager's
poll alone and with the node's own engine's events (issue 15), in the same run, interleaved.

Why: Swarm's API (1.41) has no task events and a worker's container events stay on the worker's
engine, so the swarm driver asks the manager about tasks on other nodes every 0.5 s
(`swarm_events.REMOTE_EVERY`). A node labelled `herd.engine=ADDRESS` lets herdsman subscribe to
that engine's `container die` events too (the poll stays, slower for that node, as the fallback).
This measures both on a real two-node swarm (tests/two_node_swarm.py: a manager and a worker
dockerd of their own, torn down at the end):

- a service of one replica per round, as the swarm driver labels its instances, pinned to the
  worker, running a static busybox `sleep` (an image `docker import`ed on the worker alone);
- `SwarmEvents` (the agent's watcher) with a callback that records the moment it is told;
- the task's container killed through the worker's engine (SIGKILL); time-to-notice is from just
  before the kill to the callback, at a random phase of the poll. Rounds alternate poll / events
  (the label added and removed);
- beside it, the manager API calls the watcher made in 10 idle seconds with one remote task.

    .venv/bin/python bench/swarm_remote_notice.py [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herdsman.drivers import swarm_spec as build  # noqa: E402
from herdsman.drivers.swarm import SwarmDriver  # noqa: E402
from herdsman.drivers.swarm_engine import ENGINE_LABEL  # noqa: E402
from herdsman.image.oci import ImageStore  # noqa: E402
from tests.two_node_swarm import TwoNodeSwarm  # noqa: E402

STACK = "bench-remote-notice"
IMAGE = "herdbench/busybox:1"


def busybox_image() -> bytes:
    """A rootfs tarball of the host's static busybox, with `sleep` and `sh` links."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name in ("sleep", "sh"):
            link = tarfile.TarInfo(f"bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return data.getvalue()


class Counting:
    """The manager API's `services` and `tasks` calls, counted (the watcher's cost)."""

    def __init__(self, api: Any) -> None:
        self.api, self.calls = api, 0
        self._services, self._tasks = api.services, api.tasks
        api.services, api.tasks = self._count(self._services), self._count(self._tasks)

    def _count(self, call: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return call(*args, **kwargs)

        return counted


def one_round(driver: SwarmDriver, worker: Any, node: str, n: int) -> float:
    labels = {"herd.stack-id": STACK, "herd.env": "bench", "herd.instance": f"i{n}", build.NODE_LABEL: node}
    from docker.types import RestartPolicy, ServiceMode

    service = driver.client.services.create(
        IMAGE, command=["/bin/sleep", "1000"], name=f"bench-notice-{n}", labels=labels,
        container_labels=labels, mode=ServiceMode("replicated", replicas=1),
        restart_policy=RestartPolicy(condition="none"), networks=["host"],
        constraints=[f"node.id == {node}"],
    )  # fmt: skip
    told = threading.Event()
    when: list[float] = []

    def on_exit(instance: str) -> None:
        if instance == f"i{n}":
            when.append(time.monotonic())
            told.set()

    try:
        deadline = time.monotonic() + 120
        while not (found := worker.containers.list(filters={"label": f"herd.instance=i{n}"})):
            if time.monotonic() > deadline:
                raise RuntimeError("the task did not start on the worker")
            time.sleep(0.1)
        events = driver.watch_events(STACK, on_exit, lambda: None)
        try:
            # subscribed (or not); a random phase against the poll's 0.5 s (a fixed one would
            # always kill just before, or just after, a look)
            time.sleep(1.5 + random.uniform(0, 0.5))
            start = time.monotonic()
            found[0].kill()
            if not told.wait(60):
                raise RuntimeError("the kill was never noticed")
            return when[0] - start
        finally:
            events.close()
    finally:
        service.remove()


def idle_calls(driver: SwarmDriver, worker: Any, node: str) -> int:
    """Manager calls in 10 s of watching one running remote task."""
    labels = {"herd.stack-id": STACK, "herd.env": "bench", "herd.instance": "idle", build.NODE_LABEL: node}
    from docker.types import RestartPolicy

    service = driver.client.services.create(
        IMAGE, command=["/bin/sleep", "1000"], name="bench-notice-idle", labels=labels,
        container_labels=labels, restart_policy=RestartPolicy(condition="none"), networks=["host"],
        constraints=[f"node.id == {node}"],
    )  # fmt: skip
    try:
        while not worker.containers.list(filters={"label": "herd.instance=idle"}):
            time.sleep(0.1)
        counting = Counting(driver.client.api)
        events = driver.watch_events(STACK, lambda _: None, lambda: None)
        time.sleep(1.0)
        before = counting.calls
        time.sleep(10.0)
        calls = counting.calls - before
        events.close()
        driver.client.api.services, driver.client.api.tasks = counting._services, counting._tasks
        return calls
    finally:
        service.remove()


def main() -> None:
    import docker

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    swarm = TwoNodeSwarm().start()
    home = Path(tempfile.mkdtemp(prefix="herd-notice-"))
    try:
        worker = docker.DockerClient(base_url=swarm.host("worker"), version="auto")
        worker.api.import_image_from_data(busybox_image(), repository=IMAGE.split(":")[0], tag="1")
        driver = SwarmDriver(home, ImageStore(home / "images"), docker_host=swarm.host("manager"))
        results: dict[str, list[float]] = {"poll": [], "events": []}
        calls: dict[str, int] = {}
        for n in range(2 * args.rounds):
            mode = ("poll", "events")[n % 2]
            if mode == "events":
                swarm.label(swarm.worker_id, **{ENGINE_LABEL: swarm.host("worker")})
            else:
                swarm.docker(
                    "manager", "node", "update", "--label-rm", ENGINE_LABEL, swarm.worker_id, check=False
                )
            results[mode].append(one_round(driver, worker, swarm.worker_id, n))
            if n in (0, 1):
                calls[mode] = idle_calls(driver, worker, swarm.worker_id)
            print(f"round {n} {mode}: {results[mode][-1] * 1000:.0f} ms", flush=True)
        print(f"\nmachine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print("| how | rounds | median | min | max | manager calls in 10 s idle |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for mode, times in results.items():
            ms = [t * 1000 for t in times]
            print(
                f"| {mode} | {len(ms)} | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | "
                f"{max(ms):.0f} ms | {calls.get(mode, 0)} |"
            )
        driver.client.close()
        worker.close()
    finally:
        swarm.stop()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
