"""What a new user trips over (issue 17), on each driver: `herd up` keeps the current release
(a rollback stays rolled back), an unchanged deploy is a no-op that says so, a deploy that fails
leaves no release pending, and `herd logs -f` follows from now."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from herdsman.state import StateStore
from tests.helpers import herd, instances, wait_for


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
