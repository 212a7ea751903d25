"""A burst on real processes behind the real router (issue 12, part 4, at a bounded size):
examples/burst scaled from 1 to 60 and back to 2 by `herd scale` through its agent, under a
load through the router: every instance started, admitted and in the router's pool, and no
request failed during the burst nor during the scale back in. The full thousand is bench/burst.py."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.router.client import RouterClient, stop_router
from tests.helpers import (
    Load,
    autoscaled_hello,
    free_port,
    hello_copy,
    herd,
    instances,
    stop_project,
    wait_for,
)

BURST = Path(__file__).resolve().parent.parent.parent / "examples" / "burst"
BIG = 60


@pytest.fixture
def burst(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """examples/burst copied with its route on a free port, its agent running: (project, port)."""
    root = tmp_path / "burst"
    shutil.copytree(BURST, root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    port = free_port()
    toml = root / "herd.toml"
    toml.write_text(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", toml.read_text()))
    try:
        herd(root, "up", "-d", timeout=300)
        yield root, port
    finally:
        stop_project(root)
        stop_router(root / ".herd")


def pool(root: Path) -> list[str]:
    stats = RouterClient(root / ".herd" / "run" / "router.sock").call_now({"op": "stats"})["stats"]
    return sorted(b["instance"] for b in stats.get("production/web", {}).get("backends", []))


def until_pool_has(root: Path, count: int, seconds: float = 300) -> list[str]:
    """The pool once it has ``count`` backends; the sizes it went through if it never does."""
    sizes: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        backends = pool(root)
        if not sizes or sizes[-1] != len(backends):
            sizes.append(len(backends))
        if len(backends) == count:
            return backends
        time.sleep(0.2)
    raise AssertionError(f"the pool never had {count} backends; it had {sizes}")


def running(root: Path) -> list[str]:
    return sorted(i["id"] for i in instances(root) if i["state"] == "running")


def test_a_burst_to_60_and_back_to_2_fails_no_request(burst: tuple[Path, int]) -> None:
    root, port = burst
    wait_for(lambda: len(pool(root)) == 1, 120)
    with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
        herd(root, "scale", f"web={BIG}")
        grown = until_pool_has(root, BIG)
        served_during_burst = len(load.served)
        assert running(root) == grown, "every running instance is in the router's pool"
        herd(root, "scale", "web=2")
        wait_for(lambda: len(pool(root)) == 2 and len(running(root)) == 2, 300, every=0.2)
        answered_by = len(set(load.served))  # the release header: one release throughout
    assert load.failures == [], load.failures[:5]
    assert served_during_burst > 0 and len(load.served) > served_during_burst
    assert answered_by == 1
    assert pool(root) == running(root)
    events = herd(root, "events", "-n", "1000").stdout
    assert re.search(rf"{BIG - 1} of {BIG - 1} healthy and in the pool", events), events[-2000:]
    assert "scaled to 2" in events


def test_the_autoscaler_reaching_its_max_starts_a_burst_and_fails_no_request(tmp_path: Path) -> None:
    """examples/hello under a load of 16 slow requests (0.3 s each, so that the client keeps all 16
    in flight) at once with one wanted per instance: the
    autoscaler goes from 2 to its max of 14 in one decision, and the 12 new instances start as a
    burst (adaptive window, each in the pool once healthy); calm again, back to 1. (The count is
    held at 2 by `herd scale` while the load builds up, so that the autoscaler's first look, once
    it is given the service back, sees the whole load at once and not a ramp.)"""
    root = tmp_path / "hello"
    port = hello_copy(root)
    autoscaled_hello(root, slow=0.3, max_count=14)
    try:
        herd(root, "up", "-d", timeout=300)
        herd(root, "scale", "web=2")
        with Load(f"http://127.0.0.1:{port}/slow", workers=16) as load:
            time.sleep(3.0)  # more than the autoscaler's smoothing (2 s): no sample of before
            herd(root, "scale", "web=auto")
            grown = until_pool_has(root, 14, 180)
            assert running(root) == grown, "every running instance is in the router's pool"
        wait_for(lambda: len(running(root)) == 1 and len(pool(root)) == 1, 120)
        assert load.failures == [], load.failures[:5]
        events = herd(root, "events", "-n", "1000").stdout
        scaling = [line for line in events.splitlines() if "scaled" in line or "burst of" in line]
        assert re.search(r"scaled out from 2 to 14", events), "\n".join(scaling)
        assert re.search(r"burst of 12: 12 of 12 healthy and in the pool", events), scaling
        assert re.search(r"scaled in from \d+ to 1", events), scaling
    finally:
        stop_project(root)
        stop_router(root / ".herd")
