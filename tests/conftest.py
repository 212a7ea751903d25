"""Shared test helpers.

`need(...)` is how a test asks for a real component (mmdebstrap, a Docker engine, HAProxy...).
Outside CI a missing component skips the test with the reason; under CI=true it fails the test,
because a green CI run must never hide a part that was not exercised.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a required component is missing: {why}")
    pytest.skip(why)


def need_command(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"`{name}` is not installed (make test installs it when run as root)")
    assert path is not None
    return path


def docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    need(docker_running(), "no Docker engine is running (make test starts dockerd when run as root)")


@pytest.fixture(scope="session")
def debian_hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """examples/hello on a debian:bookworm base with python3, baked once per session: the template
    of every test that runs hello on the docker driver (a `host` image cannot run in a container)."""
    from tests.helpers import hello_copy, herd

    need(docker_running(), "no Docker engine is running (make test starts dockerd when run as root)")
    root = tmp_path_factory.mktemp("debian-hello") / "hello"
    hello_copy(root)
    toml = root / "herd.toml"
    text = toml.read_text().replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
    toml.write_text(text + '\n[environment.production]\ndriver = "docker"\n')
    herd(root, "bake", timeout=600)
    yield root
    tags = subprocess.run(
        ["docker", "images", "--filter", "reference=herd/hello*", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if tags:  # the images the tests loaded into the engine
        subprocess.run(["docker", "rmi", *tags], capture_output=True)


def swarm_running() -> bool:
    from tests.helpers import SWARM_HOST

    if shutil.which("docker") is None:
        return False
    try:
        state = subprocess.run(
            ["docker", "-H", SWARM_HOST, "info", "--format", "{{.Swarm.LocalNodeState}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return state.returncode == 0 and state.stdout.strip() == "active"


@pytest.fixture(scope="session")
def swarm_engine() -> str:
    """The swarm engine's address: a second dockerd of its own in a single-node swarm, which
    scripts/system-deps starts (never the engine the docker driver's tests use)."""
    from tests.helpers import SWARM_HOST

    need(swarm_running(), f"no swarm engine answers on {SWARM_HOST} (make test starts one when run as root)")
    return SWARM_HOST


@pytest.fixture(scope="session")
def swarm_registry(tmp_path_factory: pytest.TempPathFactory, swarm_engine: str) -> Iterator[str]:
    """A local docker-registry on 127.0.0.1 for the session: where swarm deploys push their images
    and the swarm engine pulls them from, by digest. Returns its address."""
    from tests.helpers import RunningRegistry

    running = RunningRegistry(tmp_path_factory.mktemp("swarm-registry"))
    yield running.address
    running.stop()
    images = subprocess.run(
        ["docker", "-H", swarm_engine, "images", "-q", "--filter", f"reference={running.address}/*/*"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if images:  # what the swarm engine pulled from it
        subprocess.run(["docker", "-H", swarm_engine, "rmi", "-f", *set(images)], capture_output=True)


@pytest.fixture(scope="session")
def swarm_hello(
    tmp_path_factory: pytest.TempPathFactory, debian_hello: Path, swarm_engine: str, swarm_registry: str
) -> Path:
    """`debian_hello` for the swarm driver: its environment runs on the swarm engine and pulls from
    the session's registry (the template of every test that runs hello on swarm)."""
    from tests.helpers import TEMPLATE_SKIP

    root = tmp_path_factory.mktemp("swarm-hello") / "hello"
    shutil.copytree(debian_hello, root, ignore=shutil.ignore_patterns(*TEMPLATE_SKIP))
    toml = root / "herd.toml"
    swarm = f'driver = "swarm"\nregistry = "{swarm_registry}/herdtest"\ndocker_host = "{swarm_engine}"'
    toml.write_text(toml.read_text().replace('driver = "docker"', swarm))
    return root


@pytest.fixture(
    params=[
        "process",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.swarm),
    ]
)
def driver_name(request: pytest.FixtureRequest) -> str:
    """Run the test on each driver (docker needs a Docker engine, swarm the swarm engine: under
    CI=true they must be there)."""
    return str(request.param)


@pytest.fixture
def hello_on_driver(
    tmp_path: Path, driver_name: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, int]]:
    """A copy of examples/hello for the test's driver (docker from `debian_hello`, swarm from
    `swarm_hello`), with its route on a free port: (project root, route port). Everything it ran
    is stopped afterwards."""
    from tests.helpers import hello_copy, stop_project

    root = tmp_path / "hello"
    templates = {"docker": "debian_hello", "swarm": "swarm_hello"}
    template = request.getfixturevalue(templates[driver_name]) if driver_name in templates else None
    port = hello_copy(root, template=template)
    yield root, port
    stop_project(root)


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright cannot download a browser here


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright's sync API (the system browser: `make test` installs
    it as root); one per test module, a fresh context per test. Not per session: the sync API runs
    an event loop in this thread while it is open, and later tests call asyncio.run()."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is not installed (pip install -e '.[test]')")
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (make test installs it when run as root)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def hello_with_dashboard(tmp_path: Path) -> Iterator[tuple[Path, str, int]]:
    """examples/hello run by its agent with the API on 127.0.0.1: (project, dashboard URL, route port)."""
    from tests.helpers import free_port, hello_copy, herd, stop_project

    root = tmp_path / "hello"
    route = hello_copy(root)
    api = free_port()
    herd(root, "up", "-d", "--api", f"127.0.0.1:{api}")
    yield root, f"http://127.0.0.1:{api}/ui", route
    stop_project(root)
