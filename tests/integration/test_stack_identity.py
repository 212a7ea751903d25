"""Two copies of one project (the same `[stack] name`, other directories) on one machine and one
Docker engine are two stacks: each is deployed, healed and taken down without touching the other.

Labels carry `herd.stack-id` (the name plus a hash of the project's directory) and every list, heal,
reap and `herd down` filters on it; Docker volumes are named by it too, so the copies' data differs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx

from tests.helpers import (
    app_pid,
    free_port,
    herd,
    instances,
    stack_id,
    stack_name,
    stop_project,
    volume_dir,
    wait_for,
)


def running_ids(root: Path) -> set[str]:
    return {i["id"] for i in instances(root) if i["state"] == "running"}


def test_two_copies_with_one_stack_name_never_touch_each_other(
    hello_on_driver: tuple[Path, int], tmp_path: Path
) -> None:
    first, first_port = hello_on_driver
    second = tmp_path / "copy" / "hello"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("run", "logs", "state.db*", "volumes"))
    second_port = free_port()
    toml = second / "herd.toml"
    listen = r'listen = "127\.0\.0\.1:\d+"'  # the route only (a swarm project also names its registry)
    toml.write_text(re.sub(listen, f'listen = "127.0.0.1:{second_port}"', toml.read_text()))
    try:
        assert stack_name(first) == stack_name(second), "the same [stack] name"
        assert stack_id(first) != stack_id(second)
        herd(first, "up", "-d")
        herd(second, "up", "-d")
        ones, twos = running_ids(first), running_ids(second)
        assert len(ones) == 2 and len(twos) == 2 and not ones & twos, (ones, twos)
        for port in (first_port, second_port):
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200

        # each copy's data is its own
        assert volume_dir(first, "counter") != volume_dir(second, "counter")

        # a deploy of the second retires only its own instances
        app = second / "app" / "app.py"
        app.write_text(app.read_text() + "\n# release 2\n")
        herd(second, "deploy")
        assert running_ids(first) == ones, "the first copy's instances were left alone"
        new_twos = running_ids(second)
        assert len(new_twos) == 2 and not new_twos & twos

        # the first one's agent heals its own instance only
        victim = sorted(ones)[0]
        os.kill(app_pid(first, victim), signal.SIGKILL)
        healed = wait_for(lambda: (ids := running_ids(first)) and len(ids) == 2 and victim not in ids and ids)
        time.sleep(1.0)  # a round of the other agent's listing, had it seen these
        assert running_ids(second) == new_twos

        # the second copy's down stops only the second copy
        herd(second, "down")
        assert running_ids(second) == set()
        assert running_ids(first) == healed
        assert httpx.get(f"http://127.0.0.1:{first_port}/", timeout=10).status_code == 200
    finally:
        stop_project(second)
