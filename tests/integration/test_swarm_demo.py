"""The README's flow for examples/hello on Docker Swarm ("Running examples/hello on Docker
Swarm"), run as a user runs it: the `herd` command against the real single-node swarm of
scripts/system-deps and a docker-registry on 127.0.0.1. Every `herd` command that section documents
is run here, in its order, so the documentation cannot drift from what works: check, up -d (the
first release, pushed to the registry by digest), ps, a request through the router, deploy (under
load: no failed request), rollback, releases, logs, down (no service left on the swarm,
the volume kept).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import Load, docker_cmd, hello_copy, herd, instances, stack_id, stop_project, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Running examples/hello on Docker Swarm"
# the documented commands, in the README's order (each must appear there as `herd ARGS`)
FLOW = [
    ("check",),
    ("up", "-d"),
    ("ps",),
    ("deploy",),
    ("rollback",),
    ("releases",),
    ("logs", "-n", "20"),
    ("down",),
]


def swarm_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def services(root: Path) -> list[str]:
    label = f"label=herd.stack-id={stack_id(root)}"
    out = subprocess.run(
        [*docker_cmd(root), "service", "ls", "-q", "--filter", label], capture_output=True, text=True
    )
    return out.stdout.split()


def release_of(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=10).headers["x-herd-release"]


def test_the_readme_documents_the_flow_this_test_runs() -> None:
    section = swarm_section()
    positions = []
    for args in FLOW:
        command = "herd " + " ".join(args)
        assert re.search(rf"^{re.escape(command)}(\s|$)", section, re.M), f"README does not show `{command}`"
        positions.append(re.search(rf"^{re.escape(command)}(\s|$)", section, re.M).start())  # type: ignore[union-attr]
    assert positions == sorted(positions), "the README shows the commands in another order"
    # the herd.toml it shows is the one the flow runs on (tests/conftest.py `swarm_hello`)
    for line in (
        'base = "debian:bookworm"',
        'packages = ["python3"]',
        'driver = "swarm"',
        'registry = "127.0.0.1:5000/hello"',
        'docker_host = "unix:///run/herd-swarm/docker.sock"',
    ):
        assert line in section, f"README's herd.toml lacks {line}"


@pytest.mark.swarm
def test_the_readme_flow_runs_examples_hello_on_swarm(tmp_path: Path, swarm_hello: Path) -> None:
    root = tmp_path / "hello"
    port = hello_copy(root, template=swarm_hello)
    try:
        checked = herd(root, "check").stdout
        assert re.match(r"ok \S*herd\.toml: stack ", checked), checked

        out = herd(root, "up", "-d", timeout=600).stdout
        assert "no release yet" in out, out
        rows = instances(root)
        assert [r["release"] for r in rows] == ["1", "1"] and {r["state"] for r in rows} == {"running"}
        assert len(services(root)) == 2, "one Swarm service per instance"
        assert release_of(port) == "1"
        assert "Hello from herdsman" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text

        app = root / "app" / "app.py"
        app.write_text(app.read_text() + "\n# v2\n")
        with Load(f"http://127.0.0.1:{port}/", workers=4) as load:
            herd(root, "deploy", timeout=600)
        assert load.served and not load.failures, load.failures[:5]
        assert release_of(port) == "2"

        herd(root, "rollback", timeout=600)
        wait_for(lambda: {r["release"] for r in instances(root)} == {"3"}, 120, every=0.5)
        assert release_of(port) == "3"

        releases = herd(root, "releases").stdout
        assert re.search(r"^\s*3\b.*rollback", releases, re.M | re.I), releases
        logs = herd(root, "logs", "-n", "20").stdout
        assert any(r["id"] in logs for r in instances(root)), logs  # the serving instances' output

        herd(root, "down", timeout=300)
        assert services(root) == [], "herd down leaves no service on the swarm"
        assert instances(root) == []
        volume = f"herd-{stack_id(root)}-counter"
        kept = subprocess.run([*docker_cmd(root), "volume", "inspect", volume], capture_output=True)
        assert kept.returncode == 0, "the data outlives `herd down`, as the README says"
    finally:
        stop_project(root)
