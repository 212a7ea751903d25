"""`herd ps`: health from the agent's own liveness checks when an agent runs, probed here otherwise."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from herdsman.client import AgentClient
from tests.helpers import app_pid, hello_copy, herd, instances, stop_project, wait_for


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
