"""The deploy lifecycle through the `herd` command, on each driver (real processes, real
containers): volumes and logs outlive ten deploys, a deploy lock keeps deploys apart, and a control
plane killed mid-rollout is recovered by the agent, with no orphan left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from herdsman.state import StateStore
from tests.helpers import (
    Load,
    docker_cmd,
    hello_copy,
    herd,
    instances,
    on_docker,
    stack_name,
    stop_project,
    volume_dir,
)


def instances_running(project: Path) -> list[dict[str, str]]:
    return instances(project)


def instance_groups(project: Path) -> set[int] | set[str]:
    """Process groups (one per instance) of processes running this project's images, found in the
    whole process table, or the project's running containers: more than instances is an orphan."""
    if on_docker(project):
        label = f"label=herd.stack={stack_name(project)}"
        return set(
            subprocess.run(
                [*docker_cmd(project), "ps", "-q", "--filter", label], capture_output=True, text=True
            ).stdout.split()
        )
    groups = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if str(project) in cmd and "app.py" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
                groups.add(int(stat.rsplit(")", 1)[1].split()[2]))
    return groups


@pytest.fixture
def project(hello_on_driver: tuple[Path, int]) -> Path:
    return hello_on_driver[0]


def test_volume_and_logs_survive_ten_deploys(project: Path) -> None:
    app = project / "app" / "app.py"
    original = app.read_text()
    for n in range(10):
        app.write_text(original + f"\n# deploy {n}\n")
        herd(project, "deploy")
        address = instances(project)[0]["address"]  # not the last column: on Swarm that is the node
        page = httpx.get(f"http://{address}/", timeout=5).text
        assert f"visit number <b id=visits>{n + 1}</b>" in page, "the counter lives on the volume"
    assert json.loads((volume_dir(project, "counter") / "visits").read_text()) == {"visits": 10, "schema": 2}
    releases = StateStore(project / ".herd" / "state.db").releases("production")
    assert len(releases) == 10 and releases[-1].status == "deployed"
    first_release_logs = herd(project, "logs", "--release", "1").stdout
    assert "hello listening" in first_release_logs, "logs of replaced instances stay readable"
    assert len(instance_groups(project)) == 2, "two replicas, and no orphan"


def test_a_second_concurrent_deploy_is_refused_clearly(project: Path) -> None:
    app = project / "app" / "app.py"
    app.write_text(
        app.read_text().replace("def main() -> None:", "def main() -> None:\n    import time; time.sleep(2)")
    )
    slow = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(project / "herd.toml"), "deploy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        second = herd(project, "deploy", check=False)
        assert second.returncode == 1
        assert "another deploy of environment 'production' is running" in second.stderr
        assert "--wait" in second.stderr
    finally:
        assert slow.wait(timeout=120) == 0, slow.stderr.read() if slow.stderr else ""


@pytest.mark.parametrize("killed", ["agent", "deployer"])
def test_control_plane_killed_mid_rollout(project: Path, killed: str) -> None:
    """SIGKILL to whatever runs the rollout: traffic keeps flowing through the router, a new agent
    adopts the instances and finishes the rollout, and no process is left behind."""
    port = int((project / "herd.toml").read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
    herd(project, "deploy")
    app = project / "app" / "app.py"
    # release 2 starts slowly, so the rollout is surely under way when its runner dies
    app.write_text(
        app.read_text().replace(
            "def main() -> None:", "def main() -> None:\n    import time; time.sleep(1.5)"
        )
    )
    load = Load(f"http://127.0.0.1:{port}/healthz").__enter__()
    if killed == "agent":  # it keeps release 1; the deploy goes through it, and it runs the rollout
        herd(project, "up", "-d")
    runner = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(project / "herd.toml"), "deploy"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file = project / ".herd" / "run" / "agent-production.pid"
    victim = int(pid_file.read_text()) if killed == "agent" else runner.pid
    state = StateStore(project / ".herd" / "state.db")
    try:
        for _ in range(200):
            if state.unfinished_rollouts("production"):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        runner.wait()
        time.sleep(1.0)  # nobody runs the rollout now: the router keeps serving
        herd(project, "up", "-d", "--no-deploy")
        for _ in range(300):  # the new agent finishes the interrupted rollout
            running = [i for i in instances_running(project) if i["state"] == "running"]
            done = {i["release"] for i in running} == {"2"} and len(running) == 2
            if done and not state.unfinished_rollouts("production"):
                break
            time.sleep(0.1)
    finally:
        time.sleep(0.5)
        load.stop()
    running = [i for i in instances_running(project) if i["state"] == "running"]
    assert {i["release"] for i in running} == {"2"} and len(running) == 2
    assert state.release("production", 2).status == "deployed"
    assert load.failures == [], load.failures[:5]
    assert len(load.served) > 50 and load.served[-1] == "2"
    assert len(instance_groups(project)) == 2, "no orphan instance process"


def test_ctrl_c_stops_the_agent_only(project: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(project / "herd.toml"), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert agent.stdout is not None
    for line in agent.stdout:
        if line.startswith("ready"):
            break
    before = {i["id"] for i in instances_running(project) if i["state"] == "running"}
    assert len(before) == 2
    agent.send_signal(signal.SIGINT)
    assert agent.wait(timeout=30) == 0
    after = {i["id"] for i in instances_running(project) if i["state"] == "running"}
    assert after == before, "instances outlive the agent"
    events = [e["message"] for e in StateStore(project / ".herd" / "state.db").events("production")]
    assert any("agent stopped" in message for message in events)


def test_a_second_agent_is_refused_with_the_reason(tmp_path: Path) -> None:
    from tests.helpers import hello_copy, stop_project

    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "up", "-d")
        second = herd(root, "up", "-d", check=False)
        assert second.returncode == 1
        assert "is already running (pid" in second.stderr and "herd deploy" in second.stderr, second.stderr
    finally:
        stop_project(root)


def test_herd_diff_names_each_changed_value_and_layer(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")
        toml = root / "herd.toml"
        toml.write_text(toml.read_text().replace('GREETING = "Hello from herdsman"', 'GREETING = "Hi"'))
        (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# changed\n")
        herd(root, "deploy")
        out = herd(root, "diff", "1", "2").stdout
        assert "web.env.GREETING" in out and "- Hello from herdsman" in out and "+ Hi" in out
        assert "web.image" in out
        assert "layer(s) shared" in out and "+ " in out.split("layer(s) shared", 1)[1]
        assert "are the same" in herd(root, "diff", "2", "2").stdout
        missing = herd(root, "diff", "1", "9", check=False)
        assert missing.returncode != 0 and "9" in missing.stderr
    finally:
        stop_project(root)
