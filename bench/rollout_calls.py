"""Benchmark: what one rolling deploy of 3 instances asks of the driver, and how long `herd deploy` takes.

On Docker every `inspect` is an API round trip, so the executor should ask only what it does not
know already. This deploys examples/hello (3 replicas) twice through the Python API with a counting
driver — the second deploy replaces all three — and prints the driver calls of that rollout; then it
times `herd deploy` (the CLI, as a user runs it, a changed app each time) three times.

    .venv/bin/python bench/rollout_calls.py [--driver process|docker]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    """A driver that counts the calls made of it and passes them on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_copy(where: Path, driver: str) -> Path:
    root = where / "hello"
    shutil.copytree(ROOT / "examples" / "hello", root, ignore=shutil.ignore_patterns(".herd", "__pycache__"))
    toml = root / "herd.toml"
    text = toml.read_text().replace("replicas = 2", "replicas = 3")
    text = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{free_port()}", text)
    text = text.replace('interval = "500ms"', 'interval = "100ms"').replace(
        'timeout = "500ms"', 'timeout = "100ms"'
    )
    if driver == "docker":
        text = text.replace('base = "host"', 'base = "debian:bookworm"\npackages = ["python3"]')
        text += '\n[environment.production]\ndriver = "docker"\n'
    toml.write_text(text.replace('name = "hello"', f'name = "bench-{os.urandom(3).hex()}"'))
    return root


def touch(root: Path, n: int) -> None:
    app = root / "app" / "app.py"
    app.write_text(app.read_text() + f"\n# bench {n}\n")


def herd(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), *args],
        check=True,
        capture_output=True,
        timeout=900,
    )


def counted_rollout(root: Path) -> collections.Counter[str]:
    from herdsman.deploy.run import Deployment
    from herdsman.spec import load_project

    deployment = Deployment.open(load_project(root / "herd.toml"))
    counting = Counting(deployment.driver)
    deployment.driver = deployment.executor.driver = counting  # type: ignore[assignment]
    asyncio.run(deployment.deploy(secrets={}))
    return counting.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["process", "docker"], default="process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = project_copy(Path(tmp), args.driver)
        try:
            herd(root, "deploy")  # release 1 (and the bake of the base)
            touch(root, 0)
            calls = counted_rollout(root)
            times = []
            for n in range(1, 4):
                touch(root, n)
                started = time.monotonic()
                herd(root, "deploy")
                times.append(time.monotonic() - started)
        finally:
            subprocess.run(
                [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "down"], capture_output=True
            )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"driver {args.driver}: one rolling deploy of 3 replaced instances asked the driver for")
    for name, count in sorted(calls.items()):
        print(f"  {name:<10} {count}")
    print(f"herd deploy (CLI, changed app, 3 runs): median {statistics.median(times):.2f}s, {times}")


if __name__ == "__main__":
    main()
