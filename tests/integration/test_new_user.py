"""What a new user trips over (issue 17), on each driver: `herd up` keeps the current release
(a rollback stays rolled back), an unchanged deploy is a no-op that says so, a deploy that fails
leaves no release pending, and `herd logs -f` follows from now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from herdsman.state import StateStore
from tests.helpers import hello_copy, herd, instances, stop_project, wait_for


def releases(root: Path) -> list[tuple[int, str, str]]:
    """(number, status, trigger) of every release of production, oldest first."""
    state = StateStore(root / ".herd" / "state.db")
    return [(r.number, r.status, r.trigger) for r in state.releases("production")]


def stop_agent(root: Path) -> None:
    """Stop the agent only (instances keep running), as Ctrl-C on `herd up` does."""
    pid = int((root / ".herd" / "run" / "agent-production.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20)


def test_up_starts_the_current_release_and_deploys_files_only_when_there_is_none(
    hello_on_driver: tuple[Path, int],
) -> None:
    root, port = hello_on_driver
    out = herd(root, "up", "-d", timeout=600).stdout
    assert "no release yet: deploying the files as release 1" in out, out

    herd(root, "down")  # nothing current now: the next `up` starts release 1 again, deploys nothing
    out = herd(root, "up", "-d", timeout=300).stdout
    assert "starting release 1 again" in out, out
    assert [n for n, _, _ in releases(root)] == [1]
    assert {i["release"] for i in instances(root)} == {"1"}

    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace("Hello from herdsman", "Hello, changed"))
    herd(root, "deploy", timeout=300)  # release 2, through the agent
    herd(root, "rollback", timeout=300)  # release 3: a copy of release 1
    stop_agent(root)

    out = herd(root, "up", "-d", timeout=300).stdout
    assert "release 3 is current" in out, out
    assert [(n, s) for n, s, _ in releases(root)] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert {i["release"] for i in instances(root)} == {"3"}
    assert "Hello from herdsman" in httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True,
        capture_output=True,
    )


def test_an_unchanged_deploy_records_nothing_and_replaces_nothing(hello_on_driver: tuple[Path, int]) -> None:
    root, _port = hello_on_driver
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "hello")
    herd(root, "deploy", timeout=300)
    running = {i["id"] for i in instances(root)}

    (root / "NOTES.md").write_text("docs only: not in any image\n")  # a docs-only commit
    git(root, "add", "-A")
    git(root, "commit", "-qm", "docs")
    out = herd(root, "deploy", timeout=300)
    assert "nothing changed: release 1 is current" in out.stdout, out.stdout
    assert [n for n, _, _ in releases(root)] == [1]
    assert {i["id"] for i in instances(root)} == running, "nothing was replaced"
    revision = StateStore(root / ".herd" / "state.db").release("production", 1).revision
    assert len(revision) == 40, "the release keeps where it came from"

    out = herd(root, "deploy", "--force", timeout=300)
    assert "release 2" in out.stdout and "deployed" in out.stdout, out.stdout
    assert not running & {i["id"] for i in instances(root)}, "--force rolled every instance"

    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace("Hello from herdsman", "Hello, changed"))
    herd(root, "deploy", timeout=300)
    assert [(n, s) for n, s, _ in releases(root)][-1] == (3, "deployed")


@pytest.mark.docker
def test_docker_refuses_a_host_image_before_anything_is_recorded_or_migrated(
    tmp_path: Path, docker_engine: None
) -> None:
    root = tmp_path / "hello"
    hello_copy(root)  # base = "host", with a migration and a volume
    (root / "herd.toml").write_text(
        (root / "herd.toml").read_text() + '\n[environment.production]\ndriver = "docker"\n'
    )
    try:
        result = herd(root, "deploy", check=False, timeout=300)
        assert result.returncode == 1
        said = result.stdout + result.stderr
        assert "nothing was recorded or started" in said and "cannot run in a container" in said, said
        assert releases(root) == [], "no release was recorded"
        assert not (root / ".herd" / "snapshots").exists(), "no snapshot, no migration"
    finally:
        stop_project(root)


def test_a_failed_deploy_leaves_no_release_pending(tmp_path: Path) -> None:
    """Whatever fails during a rollout (here the machine: the volume's directory is a file), the
    release is marked failed with the reason, and the error is one clear line, not a traceback."""
    root = tmp_path / "hello"
    hello_copy(root)
    (root / ".herd" / "volumes").mkdir(parents=True)
    (root / ".herd" / "volumes" / "counter").write_text("not a directory")
    try:
        result = herd(root, "deploy", check=False, timeout=300)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr, result.stderr
        assert [(n, s) for n, s, _ in releases(root)] == [(1, "failed")]
        assert "failed" in herd(root, "releases").stdout
    finally:
        stop_project(root)


def test_logs_follow_from_now_and_health_probes_log_only_changes(hello_on_driver: tuple[Path, int]) -> None:
    root, port = hello_on_driver
    herd(root, "up", "-d", timeout=600)  # the agent probes every instance every 100 ms
    time.sleep(3.0)
    history = herd(root, "logs", "web").stdout.splitlines()
    assert sum("hello listening" in line for line in history) >= 2
    probes = [line for line in history if "/healthz" in line]
    assert 1 <= len(probes) <= 2, f"a probe's line only when its answer changes: {probes}"
    assert len(herd(root, "logs", "-n", "1", "web").stdout.splitlines()) == 1

    follower = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "logs", "-f", "web"],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        time.sleep(2.0)  # the follower is up and following
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=5) and any('"GET / ' in s for s in seen),
            30,
        )
    finally:
        follower.terminate()
        follower.wait(10)
    assert not any("hello listening" in line for line in seen), f"no history with -f: {seen[:5]}"


def test_push_sends_the_deployed_image_and_a_pulled_one_is_listed(tmp_path: Path) -> None:
    from tests.integration.test_registry import RunningRegistry

    registry = RunningRegistry(tmp_path / "registry")
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy", timeout=300)
        deployed = StateStore(root / ".herd" / "state.db").release("production", 1).services()["web"].image
        app = root / "app" / "app.py"
        app.write_text(app.read_text() + "\n# baked, not deployed\n")
        herd(root, "bake")

        out = herd(root, "push", "web", f"{registry.address}/hello/web:v1").stdout
        assert "the image of release 1 (production)" in out, out
        assert out.strip().splitlines()[-1] == f"{registry.address}/hello/web@{deployed}"

        other = tmp_path / "other"
        hello_copy(other)
        herd(other, "pull", f"{registry.address}/hello/web@{deployed}")
        listed = herd(other, "images").stdout
        assert f"{registry.address}/hello/web@{deployed}" in listed, listed
    finally:
        stop_project(root)
        registry.stop()
