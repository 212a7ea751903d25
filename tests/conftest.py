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


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def driver_name(request: pytest.FixtureRequest) -> str:
    """Run the test on each driver (the docker one needs a Docker engine: under CI=true it must be there)."""
    return str(request.param)


@pytest.fixture
def hello_on_driver(
    tmp_path: Path, driver_name: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, int]]:
    """A copy of examples/hello for the test's driver (the docker one from `debian_hello`), with its
    route on a free port: (project root, route port). Everything it ran is stopped afterwards."""
    from tests.helpers import hello_copy, stop_project

    root = tmp_path / "hello"
    port = hello_copy(
        root, template=request.getfixturevalue("debian_hello") if driver_name == "docker" else None
    )
    yield root, port
    stop_project(root)


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright cannot download a browser here


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright's sync API (the system browser: `make test` installs
    it as root); one per session, a fresh context per test."""
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
