"""Shared test helpers.

`need(...)` is how a test asks for a real component (mmdebstrap, a Docker engine, HAProxy...).
Outside CI a missing component skips the test with the reason; under CI=true it fails the test,
because a green CI run must never hide a part that was not exercised.
"""

from __future__ import annotations

import os
import shutil
import subprocess

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
