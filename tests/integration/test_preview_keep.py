"""Previews kept running and kept alive (issue 16).

With an agent up, a preview is healed as production is: a killed instance of it is replaced
(through the preview's own pool and route) and `herd quarantine add` works on its instances;
production's instances, volumes and routes stay byte-identical meanwhile. `herd preview keep`
(and `create --keep`) keeps a preview past its time to live: the agent's expiry leaves it, `ls`
says so, `rm` still removes it, and once the keep ends it goes at the next round.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from herdsman.state import StateStore
from tests.helpers import app_pid, herd, wait_for
from tests.integration.test_preview import preview_row, production_bytes


def preview_ids(root: Path, env: str) -> set[str]:
    """The running instances of ``env``, by `herd ps --env`."""
    listing = herd(root, "ps", "--env", env).stdout.splitlines()[1:]
    return {line.split()[0] for line in listing if " running" in line}


def serving_instance(url: str) -> str:
    """The instance that answered (examples/hello names it in its page)."""
    try:
        found = re.search(r"(preview-[a-z0-9-]+-web-\d+-[0-9a-z]+)", httpx.get(url, timeout=5).text)
    except httpx.HTTPError:
        return ""
    return found.group(1) if found else ""


def events_of(root: Path, env: str) -> list[str]:
    state = StateStore(root / ".herd" / "state.db")
    try:
        return [e["message"] for e in state.events(env)]
    finally:
        state.close()


@pytest.mark.parametrize("driver_name", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_preview_is_healed_and_quarantined_like_production(hello_on_driver: tuple[Path, int]) -> None:
    root, _port = hello_on_driver
    herd(root, "deploy")
    herd(root, "up", "-d", "--no-deploy")
    before = production_bytes(root)
    router_file = (root / ".herd" / "run" / "router.json").read_bytes()
    made = herd(root, "preview", "create", "heal", "--ttl", "30m").stdout
    url = re.search(r"web: (http://127\.0\.0\.1:\d+/)", made).group(1)  # type: ignore[union-attr]
    env = "preview-heal"
    try:
        wait_for(
            lambda: any("the agent keeps preview-heal" in m for m in events_of(root, env)), 60, every=0.2
        )
        (victim,) = preview_ids(root, env)
        assert serving_instance(url) == victim
        os.kill(app_pid(root, victim), signal.SIGKILL)
        replaced = wait_for(
            lambda: (ids := preview_ids(root, env)) and victim not in ids and len(ids) == 1 and ids,
            120,
            every=0.3,
        )
        (second,) = replaced
        wait_for(lambda: serving_instance(url) == second, 60, every=0.2)  # its own route serves again
        assert any(victim in m and "replacing it now" in m for m in events_of(root, env))
        assert production_bytes(root) == before  # production's instances, volume and routes untouched

        asked = herd(root, "quarantine", "add", second, "--reason", "look at it").stdout
        assert second in asked
        third = wait_for(
            lambda: (ids := preview_ids(root, env)) and second not in ids and len(ids) == 1 and ids,
            120,
            every=0.3,
        ).pop()
        wait_for(lambda: (root / ".herd" / "quarantine" / second).is_dir(), 60, every=0.2)
        wait_for(lambda: serving_instance(url) == third, 60, every=0.2)
        assert second in herd(root, "quarantine").stdout
        assert production_bytes(root) == before

        herd(root, "preview", "rm", "heal")
        time.sleep(3)  # a round of the agent's loop: nothing of the preview comes back
        assert preview_ids(root, env) == set()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
        assert production_bytes(root) == before
        assert (root / ".herd" / "run" / "router.json").read_bytes() == router_file
    finally:
        if preview_row(root, "heal") is not None:
            herd(root, "preview", "rm", "heal", check=False)

