"""examples/hello deployed with `[router] engine = "haproxy"` on the process driver: a rolling
deploy under load fails no request with a real HAProxy in front, the agent's stats come from
HAProxy, and `herd down` stops the HAProxy herdsman started."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.router.haproxy.engine import HaproxyPools
from tests.conftest import need_command
from tests.helpers import Load, hello_copy, herd, instances, stop_project, wait_for


@pytest.fixture
def hello_haproxy(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    need_command("haproxy")
    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[router]\nengine = "haproxy"\n')
    yield root, port
    stop_project(root)


def test_rolling_deploy_through_haproxy_fails_no_request(hello_haproxy: tuple[Path, int]) -> None:
    root, port = hello_haproxy
    herd(root, "deploy")
    pools = HaproxyPools(root / ".herd")
    master = pools.master_pid()
    assert master is not None and os.readlink(f"/proc/{master}/exe").endswith("haproxy")
    assert not (root / ".herd" / "run" / "router.sock").exists(), "the embedded router was not started"
    (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
    with Load(f"http://127.0.0.1:{port}/healthz", workers=6) as load:
        time.sleep(0.5)
        herd(root, "deploy")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert len(load.served) > 50 and load.served[-1] == "2"
    running = [i for i in instances(root) if i["state"] == "running"]
    assert len(running) == 2 and {i["release"] for i in running} == {"2"}
    backends = asyncio.run(pools.stats())["production/web"]["backends"]
    assert sorted(b["instance"] for b in backends) == sorted(i["id"] for i in running)
    assert sum(b["requests"] for b in backends) > 0
    assert pools.master_pid() == master, "a pool change never restarts HAProxy"
    herd(root, "down")
    wait_for(lambda: pools.master_pid() is None, 10)
