"""`herd ps`: health from the agent's own liveness checks when an agent runs, probed here otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from herdsman.client import AgentClient
from herdsman.facade.views import instances as listed_here
from herdsman.spec import load_project
from tests.helpers import app_pid, hello_copy, herd, instances, stop_project, wait_for

# what `herd ps` must not load when the agent answers (the cost of it, not its time, is guarded:
# ~0.5 s of a 1,000-instance `herd ps` was these imports): models, HTTP client, event loop, rich,
# drivers and the deploy and image code, and the full path (views) that needs them
HEAVY = (
    "pydantic",
    "httpx",
    "asyncio",
    "rich",
    "herdsman.spec.models",
    "herdsman.spec.load",
    "herdsman.drivers",
    "herdsman.deploy.run",
    "herdsman.deploy.execute",
    "herdsman.image.bake",
    "herdsman.health",
    "herdsman.facade.views",
    "herdsman.facade.stack",
    "herdsman.cli.ui",
)

PS_AND_MODULES = """
import contextlib, io, json, sys
from herdsman.cli import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    cli.main(["-f", sys.argv[1], "ps"], standalone_mode=False)
print(json.dumps({"shown": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def test_ps_shows_the_agents_last_checks_and_probes_itself_without_an_agent(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    toml = root / "herd.toml"  # the agent checks each instance once, then not for an hour
    toml.write_text(toml.read_text().replace('interval = "100ms"', 'interval = "1h"'))
    herd(root, "up", "-d")
    stopped = None
    try:
        with AgentClient.for_project(root / "herd.toml") as agent:
            wait_for(lambda: all(i["health"] == "healthy" for i in agent.instances()), 60)
        shown = herd(root, "ps").stdout
        assert "health: the agent's last liveness checks" in shown, shown
        assert {i["health"] for i in instances(root)} == {"healthy"}, shown
        # a frozen instance would fail a probe made now: `herd ps` shows the agent's result instead
        stopped = app_pid(root, instances(root)[0]["id"])
        frozen = instances(root)[0]["id"]
        os.kill(stopped, signal.SIGSTOP)
        assert {i["health"] for i in instances(root)} == {"healthy"}, "no probe of its own"
        # without an agent (its instances run on), `herd ps` probes each instance itself
        pid_file = root / ".herd" / "run" / "agent-production.pid"
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        wait_for(lambda: "health: the agent" not in herd(root, "ps").stdout, 30)
        health = {i["id"]: i["health"] for i in instances(root)}
        assert health.pop(frozen).startswith("failing (timed out"), health
        assert set(health.values()) == {"healthy"}, health
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        stop_project(root)


def test_ps_with_an_agent_loads_none_of_the_machinery_that_acts(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    herd(root, "up", "-d")
    try:
        with AgentClient.for_project(root / "herd.toml") as agent:
            wait_for(lambda: (i := agent.instances()) and all(x["health"] == "healthy" for x in i), 60)
        ran = subprocess.run(
            [sys.executable, "-c", PS_AND_MODULES, str(root / "herd.toml")],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        seen = json.loads(ran.stdout)
        loaded = [m for m in seen["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
        assert loaded == [], loaded
        assert "health: the agent's last liveness checks" in seen["shown"], seen["shown"]
        # the same instances and health as the full path (models, views.instances) finds now
        shown = {line.split()[0]: line.split()[5] for line in seen["shown"].splitlines()[1:3]}
        full = listed_here(load_project(root / "herd.toml"))
        assert full.health_by_agent
        assert {r.id: r.health for r in full.rows} == shown, (shown, full.rows)
    finally:
        stop_project(root)


def test_ps_probes_here_what_the_agent_has_no_result_for(tmp_path: Path) -> None:
    """A service with no health check: the agent has no liveness result, so `herd ps` takes the
    full path (the file validated, health from the release's check: none)."""
    root = tmp_path / "hello"
    hello_copy(root)
    toml = root / "herd.toml"
    text = toml.read_text()
    start = text.index("[service.web.health]")
    end = text.index("[", start + len("[service.web.health]"))
    toml.write_text(text[:start] + text[end:])  # no [service.web.health]
    herd(root, "up", "-d")
    try:
        with AgentClient.for_project(toml) as agent:
            wait_for(lambda: len([i for i in agent.instances() if i["state"] == "running"]) == 2, 60)
            assert {i["health"] for i in agent.instances()} == {""}
        shown = herd(root, "ps").stdout
        assert {i["health"] for i in instances(root)} == {"no check"}, shown
        assert "health: the agent" not in shown, shown
    finally:
        stop_project(root)
