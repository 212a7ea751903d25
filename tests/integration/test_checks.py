"""Admission and stopping through `herd`, on each driver: a command check runs *inside* the
instance (its private /tmp, its environment), an instance with no check must keep running for
`min_ready` before it counts, and `herd down` honours each release's `stop_grace`.

The worker below writes a heartbeat only it can see — /tmp is private to each instance — holding
its own $HERD_INSTANCE, so a check that passes proves it ran in that very instance."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.helpers import herd, instances

WORKER = """import os, signal, sys, time
from pathlib import Path

if os.environ.get("IGNORE_TERM") == "yes":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("HEARTBEAT") == "yes":
    Path("/tmp/heartbeat").write_text(os.environ["HERD_INSTANCE"])
if os.environ.get("EXIT_AT_ONCE") == "yes":
    print("worker: nothing to do, exiting", flush=True)
    sys.exit(0)
print("worker: working", flush=True)
while True:
    time.sleep(1)
"""

CHECK = """
[service.worker.health]
type = "command"
command = ["sh", "-c", 'test -s /tmp/heartbeat && test "$(cat /tmp/heartbeat)" = "$HERD_INSTANCE"']
interval = "500ms"
timeout = "500ms"
deadline = "3s"
"""


@pytest.fixture
def project(hello_on_driver: tuple[Path, int]) -> Path:
    return hello_on_driver[0]


def add_worker(root: Path, env: str, *, check: bool, extra: str = "") -> None:
    """A `worker` service (no port, no route) on the same image recipe as hello's web service."""
    toml = root / "herd.toml"
    text = toml.read_text()
    image = re.search(r"^\[service\.web\.image\]\n(.*?)\n\n", text, re.S | re.M)
    assert image is not None
    (root / "app" / "worker.py").write_text(WORKER)
    text += (
        f'\n[service.worker]\ncommand = ["python3", "worker.py"]\nreplicas = 2\nenv = {{ {env} }}\n{extra}\n'
        f"[service.worker.image]\n{image.group(1)}\n"
    )
    toml.write_text(text + (CHECK if check else ""))


def set_env(root: Path, env: str) -> None:
    toml = root / "herd.toml"
    toml.write_text(
        re.sub(
            r"^(\[service\.worker\]\n.*?\nenv = )\{[^}]*\}",
            rf"\1{{ {env} }}",
            toml.read_text(),
            flags=re.S | re.M,
        )
    )


def workers(root: Path) -> list[dict[str, str]]:
    return [i for i in instances(root) if i["service"] == "worker" and i["state"] == "running"]


def test_a_command_check_runs_inside_each_instance(project: Path) -> None:
    add_worker(project, 'HEARTBEAT = "yes"', check=True)
    herd(project, "deploy")
    running = workers(project)
    assert len(running) == 2 and {i["release"] for i in running} == {"1"}
    table = herd(project, "ps").stdout
    assert all(re.search(rf"{i['id']}\s.*healthy", table) for i in running), table

    set_env(project, 'HEARTBEAT = "no"')  # release 2's workers never write their heartbeat
    failed = herd(project, "deploy", check=False)
    assert failed.returncode == 1, failed.stdout
    assert "error: instance worker-2-" in failed.stderr and "was not healthy within 3s" in failed.stderr
    assert "(last check: exit 1)" in failed.stderr, failed.stderr
    assert {i["id"] for i in workers(project)} == {i["id"] for i in running}, "release 1 serves on"


def test_with_no_check_an_instance_must_keep_running_for_min_ready(project: Path) -> None:
    add_worker(project, 'EXIT_AT_ONCE = "no"', check=False, extra='min_ready = "1s"\n')
    herd(project, "deploy")
    running = workers(project)
    assert len(running) == 2

    set_env(project, 'EXIT_AT_ONCE = "yes"')
    failed = herd(project, "deploy", check=False)
    assert failed.returncode == 1, failed.stdout
    assert "error: instance worker-2-" in failed.stderr, failed.stderr
    assert "exited before it had run for min_ready (1s, no health check)" in failed.stderr
    assert "worker: nothing to do, exiting" in failed.stderr, "the error shows its last log lines"
    assert {i["id"] for i in workers(project)} == {i["id"] for i in running}, "release 1 runs on"


def test_down_honours_stop_grace(project: Path) -> None:
    """Workers that ignore SIGTERM with stop_grace = 1s: `herd down` takes about a second more than
    the CLI's start, not the 10 s every instance got as a fixed grace (a generous bound, not a
    benchmark: measured 4.2 s on docker, of which 2.3 s were imports)."""
    add_worker(project, 'IGNORE_TERM = "yes"', check=False, extra='stop_grace = "1s"\n')
    herd(project, "deploy")
    assert len(workers(project)) == 2
    started = time.monotonic()
    out = herd(project, "down").stdout
    took = time.monotonic() - started
    assert "stopped 4 instance(s)" in out
    # the fixed 10 s grace alone took longer than this; the rest is the CLI starting (2-4 s on a
    # busy 2-core machine: imports, the Docker client) and the engine stopping four containers
    assert took < 8, f"herd down took {took:.1f}s"
    assert instances(project) == []
