"""examples/hello deployed on the process driver with each `[router] engine`, HAProxy above all: a
rolling deploy under load fails no request, the pool the agent reads (stats) is the new release's,
a pool change neither restarts nor reloads HAProxy, `herd down` stops the router herdsman started;
the agent's /metrics count HAProxy's requests, and killing the agent drops no traffic."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.router.engines import ensure_router_pools
from herdsman.router.haproxy.engine import HaproxyPools
from herdsman.spec import load_project
from tests.conftest import need_command
from tests.helpers import Load, hello_copy, herd, instances, stop_project, wait_for


@pytest.fixture(params=["haproxy", "embedded"])
def hello_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    engine = str(request.param)
    root = tmp_path / "hello"
    port = hello_copy(root)
    if engine == "haproxy":
        need_command("haproxy")
        toml = root / "herd.toml"
        toml.write_text(toml.read_text() + '\n[router]\nengine = "haproxy"\n')
    yield root, port, engine
    stop_project(root)


def test_rolling_deploy_fails_no_request_on_either_engine(hello_engine: tuple[Path, int, str]) -> None:
    root, port, engine = hello_engine
    herd(root, "deploy")
    haproxy = HaproxyPools(root / ".herd")
    master = haproxy.master_pid()
    embedded_socket = root / ".herd" / "run" / "router.sock"
    if engine == "haproxy":
        assert master is not None and os.readlink(f"/proc/{master}/exe").endswith("haproxy")
        assert not embedded_socket.exists(), "the embedded router was not started"
    else:
        assert master is None and embedded_socket.exists()
    worker = asyncio.run(haproxy.runtime.worker_pid())
    (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
    with Load(f"http://127.0.0.1:{port}/healthz", workers=6) as load:
        time.sleep(0.5)
        herd(root, "deploy")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert len(load.served) > 50 and load.served[-1] == "2"
    running = [i for i in instances(root) if i["state"] == "running"]
    assert len(running) == 2 and {i["release"] for i in running} == {"2"}
    pools = ensure_router_pools(load_project(root / "herd.toml"), "production")
    backends = asyncio.run(pools.stats())["production/web"]["backends"]
    assert sorted(b["instance"] for b in backends) == sorted(i["id"] for i in running)
    assert sum(b["requests"] for b in backends) > 0
    assert haproxy.master_pid() == master, "a pool change never restarts HAProxy"
    assert asyncio.run(haproxy.runtime.worker_pid()) == worker, "nor reloads it: the routes did not change"
    assert "stopped the router" in herd(root, "down").stdout
    wait_for(lambda: haproxy.master_pid() is None and not embedded_socket.exists(), 10)


def test_the_agent_counts_requests_from_haproxy_and_its_death_drops_no_traffic(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from herdsman.client import AgentClient

    need_command("haproxy")
    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[router]\nengine = "haproxy"\n')
    try:
        herd(root, "up", "-d")
        with AgentClient.for_project(toml) as client:
            wait_for(lambda: client.status()["services"]["web"]["running"] == 2, 30, 0.1)
            with Load(f"http://127.0.0.1:{port}/") as load:
                time.sleep(1.5)
            time.sleep(1.0)  # the agent samples the router every half second
            text = client.metrics()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        web = (("env", "production"), ("release", "1"), ("service", "web"))
        assert load.failures == [] and len(load.served) > 0
        assert samples[("herd_requests_total", web)] >= len(load.served), text
        assert samples[("herd_request_errors_total", web)] == 0
        agent = int((root / ".herd" / "run" / "agent-production.pid").read_text())
        os.kill(agent, 9)
        wait_for(lambda: not Path(f"/proc/{agent}").exists(), 10)
        with Load(f"http://127.0.0.1:{port}/") as load:
            time.sleep(1.0)
        assert load.failures == [] and len(load.served) > 20, "HAProxy serves on without the agent"
    finally:
        stop_project(root)
