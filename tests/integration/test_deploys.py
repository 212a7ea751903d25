"""Deploys through `herd` on each driver, under a bounded load through the real router: rolling and
blue-green replacements fail no request, a bad release of any kind is reverted with no failed
request, and a rollback brings back a release's image *and* its config; on either router engine."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from herdsman.router.client import RouterClient, router_paths
from herdsman.state import StateStore
from herdsman.state.store import asker
from tests.conftest import need_command
from tests.helpers import Load, herd, instances


@pytest.fixture(params=["embedded", "haproxy"])
def project(hello_on_driver: tuple[Path, int], request: pytest.FixtureRequest) -> tuple[Path, int]:
    """examples/hello on the test's driver, behind each router engine (`[router] engine`)."""
    if request.param == "haproxy":
        need_command("haproxy")
        toml = hello_on_driver[0] / "herd.toml"
        toml.write_text(toml.read_text() + '\n[router]\nengine = "haproxy"\n')
    return hello_on_driver


def edit(root: Path, old: str, new: str, file: str = "herd.toml") -> None:
    path = root / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))


def test_rolling_and_blue_green_deploys_under_load_fail_nothing(project: tuple[Path, int]) -> None:
    root, port = project
    edit(root, "replicas = 2", "replicas = 3")
    herd(root, "deploy")
    for number, strategy in ((2, "rolling"), (3, "blue-green")):
        if strategy == "blue-green":
            edit(root, 'strategy = "rolling"', 'strategy = "blue-green"')
        (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + f"\n# {strategy}\n")
        with Load(f"http://127.0.0.1:{port}/healthz", workers=6) as load:
            time.sleep(0.5)
            herd(root, "deploy")
            time.sleep(0.5)
        assert load.failures == [], load.failures[:5]
        assert len(load.served) > 50 and load.served[-1] == str(number)
    running = [i for i in instances(root) if i["state"] == "running"]
    assert len(running) == 3 and {i["release"] for i in running} == {"3"}


BAD_RELEASES = {
    "crashes at start": "import sys\nprint('boom: no DATABASE_URL', flush=True)\nsys.exit(3)\n",
    "never healthy": "import time\nprint('not listening', flush=True)\ntime.sleep(60)\n",
    "hangs": (
        "import os, socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(os.environ['PORT'])))\n"
        "s.listen()\nprint('accepting, never answering', flush=True)\ntime.sleep(60)\n"
    ),
    "slow to start": "SLOW",
}


@pytest.mark.parametrize("kind", list(BAD_RELEASES))
def test_a_bad_release_under_load_fails_no_request(project: tuple[Path, int], kind: str) -> None:
    root, port = project
    edit(root, 'path = "/healthz"', 'path = "/healthz"\ndeadline = "2s"')
    herd(root, "deploy")
    app = root / "app" / "app.py"
    bad = BAD_RELEASES[kind]
    if bad == "SLOW":
        bad = app.read_text().replace(
            "def main() -> None:", "def main() -> None:\n    import time; time.sleep(4)"
        )
    app.write_text(bad)
    with Load(f"http://127.0.0.1:{port}/") as load:
        result = herd(root, "deploy", check=False)
        time.sleep(0.3)
    assert result.returncode == 1
    assert "error: instance web-2-" in result.stderr and "previous release keeps serving" in result.stderr
    if kind == "crashes at start":
        assert "boom: no DATABASE_URL" in result.stderr
    assert load.failures == [], load.failures[:5]
    assert set(load.served) == {"1"} and len(load.served) > 20
    assert "failed" in herd(root, "releases").stdout
    running = [i for i in instances(root) if i["state"] == "running"]
    assert {i["release"] for i in running} == {"1"} and len(running) == 2, "only the old release runs"


def test_rollback_restores_the_image_and_the_config(project: tuple[Path, int]) -> None:
    """Peers roll back the image and forget the config; a herdsman release is both, so a rollback
    brings back exactly what ran."""
    root, port = project
    url = f"http://127.0.0.1:{port}/"
    herd(root, "deploy")  # release 1: "Hello from herdsman"
    edit(root, 'GREETING = "Hello from herdsman"', 'GREETING = "Bonjour"')
    edit(root, "replicas = 2", "replicas = 3")
    (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
    herd(root, "deploy")  # release 2: new image, new env, 3 replicas
    assert "Bonjour" in httpx.get(url).text
    with Load(url) as load:
        out = herd(root, "rollback").stdout
        time.sleep(0.3)
    assert load.failures == [], load.failures[:5]
    page = httpx.get(url)
    assert "Hello from herdsman" in page.text and page.headers["x-herd-release"] == "3"
    running = [i for i in instances(root) if i["state"] == "running"]
    assert len(running) == 2 and {i["release"] for i in running} == {"3"}, "the replica count came back too"
    state = StateStore(root / ".herd" / "state.db")
    assert state.release("production", 3).content == state.release("production", 1).content
    assert state.release("production", 3).copy_of == 1 and "release 3" in out
    history = herd(root, "releases").stdout
    assert "rollback to 1" in history
    assert re.search(rf"^3 .*rollback to 1\s+{re.escape(asker())}\s*$", history, re.M), history  # who asked


@pytest.mark.parametrize("driver_name", ["process"])
def test_a_rolling_deploy_through_two_router_workers_fails_nothing(hello_on_driver: tuple[Path, int]) -> None:
    """`[router] workers = 2`: each pool change reaches both workers before the deployer goes on,
    so old instances are stopped only once neither worker sends them anything."""
    root, port = hello_on_driver
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + "\n[router]\nworkers = 2\n")
    edit(root, "replicas = 2", "replicas = 3")
    herd(root, "deploy")
    socket_path = router_paths(root / ".herd")[0]
    workers = RouterClient(socket_path).call_now({"op": "ping"})["workers"]
    assert len(workers) == 2 and all(workers), workers
    (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
    with Load(f"http://127.0.0.1:{port}/healthz", workers=6) as load:
        time.sleep(0.5)
        herd(root, "deploy")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert len(load.served) > 50 and load.served[-1] == "2"
    stats = RouterClient(socket_path).call_now({"op": "stats"})["stats"]["production/web"]["backends"]
    assert {b["instance"].split("-")[1] for b in stats} == {"2"}, "only release 2 is pooled, in every worker"
    assert sum(b["requests"] for b in stats) > 0
