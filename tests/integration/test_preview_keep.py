"""Previews kept running and kept alive (issue 16).

With an agent up, a preview is healed as production is: a killed instance of it is replaced
(through the preview's own pool and route) and `herd quarantine add` works on its instances;
production's instances, volumes and routes stay byte-identical meanwhile. `herd preview keep`
(and `create --keep`) keeps a preview past its time to live: the agent's expiry leaves it, `ls`
says so, `rm` still removes it, and once the keep ends it goes at the next round.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from herdsman.state import StateStore
from tests.helpers import app_pid, hello_copy, herd, stop_project, wait_for, write_tmp
from tests.integration.test_agent import SICK
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
    """Killed: replaced. Named (`herd quarantine add`): replaced, then kept. Failing its liveness
    checks: quarantined with its evidence. Production byte-identical throughout."""
    root, _port = hello_on_driver
    app = root / "app" / "app.py"
    app.write_text(app.read_text().replace('        if self.path == "/healthz":\n', SICK))
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

        asked = herd(root, "quarantine", "add", second, "--env", env, "--reason", "look at it").stdout
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

        write_tmp(root, third, "sick", "made sick by the test")  # its liveness checks fail
        kept = root / ".herd" / "quarantine" / third
        fourth = wait_for(
            lambda: (
                (kept / "instance.json").exists()
                and (ids := preview_ids(root, env))
                and third not in ids
                and len(ids) == 1
                and ids
            ),
            120,
            every=0.3,
        ).pop()
        evidence = json.loads((kept / "instance.json").read_text())
        assert "liveness checks" in evidence["reason"] and evidence["service"] == "web"
        wait_for(lambda: serving_instance(url) == fourth, 60, every=0.2)
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


def test_a_kept_preview_outlives_its_ttl_and_goes_when_its_keep_ends(tmp_path: Path) -> None:
    """On the process driver, with an agent: a plain preview goes at its TTL; one made with --keep
    stays until `herd preview rm`; one kept `--for` a while stays past its TTL and goes at the
    first expiry round after its keep ends. Bad names and durations are clear errors."""
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")
        herd(root, "up", "-d", "--no-deploy")
        made = herd(root, "preview", "create", "always", "--ttl", "5s", "--keep").stdout
        assert "until it is removed (kept)" in made, made
        url = re.search(r"web: (http://127\.0\.0\.1:\d+/)", made).group(1)  # type: ignore[union-attr]
        herd(root, "preview", "create", "timed", "--ttl", "20s")
        kept = herd(root, "preview", "keep", "timed", "--for", "25s").stdout
        assert "timed: kept until" in kept, kept
        timed = preview_row(root, "timed")
        assert timed is not None and timed["kept"] == 1
        assert float(timed["kept_until"]) > float(timed["expires"])  # type: ignore[arg-type]

        missing = herd(root, "preview", "keep", "nope", "--forever", check=False)
        assert missing.returncode != 0 and "there is no preview 'nope'" in missing.stderr
        assert "always, timed" in missing.stderr  # the ones there are
        bad = herd(root, "preview", "keep", "timed", "--for", "2x", check=False)
        assert bad.returncode != 0 and "--for 2x" in bad.stderr and "--for 2h" in bad.stderr, bad.stderr
        neither = herd(root, "preview", "keep", "timed", check=False)
        assert neither.returncode != 0 and "--for DURATION or --forever" in neither.stderr
        herd(root, "preview", "create", "plain", "--ttl", "5s")

        wait_for(lambda: preview_row(root, "plain") is None, 90, every=0.25)  # the agent's expiry
        wait_for(lambda: time.time() > float(timed["expires"]) + 3, 60, every=0.2)  # type: ignore[arg-type]
        assert preview_row(root, "timed") is not None  # past its TTL, kept
        listed = herd(root, "preview", "ls").stdout  # expires the expired too: not the kept ones
        always = next(line for line in listed.splitlines() if line.startswith("always"))
        assert always.rstrip().endswith("kept"), listed
        assert "kept until" in next(line for line in listed.splitlines() if line.startswith("timed"))
        assert "plain" not in listed
        assert "preview-always-web-" in httpx.get(url, timeout=10).text  # long past its 5 s

        wait_for(lambda: preview_row(root, "timed") is None, 90, every=0.25)  # its keep ended
        assert time.time() >= float(timed["kept_until"])  # type: ignore[arg-type]
        messages = events_of(root, "production")
        assert any(m.startswith("preview timed removed (expired)") for m in messages), messages[-10:]
        assert any(m.startswith("preview plain removed (expired)") for m in messages)
        assert preview_row(root, "always") is not None
        herd(root, "preview", "rm", "always")  # kept, and still removed by hand
        assert preview_row(root, "always") is None
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
        assert "no preview" in herd(root, "preview", "ls").stdout
    finally:
        for name in ("always", "timed", "plain"):
            if preview_row(root, name) is not None:
                herd(root, "preview", "rm", name, check=False)
        stop_project(root)


def test_an_expired_preview_can_still_be_kept_when_no_agent_removed_it(tmp_path: Path) -> None:
    """Without an agent nothing removes a preview at its TTL; `herd preview keep` then reaches it
    before the expiry that any `herd preview` command runs (review: it removed it first, then said
    there was no such preview)."""
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")
        herd(root, "preview", "create", "late", "--ttl", "2s")
        wait_for(lambda: time.time() > float((preview_row(root, "late") or {})["expires"]) + 1, 30)
        kept = herd(root, "preview", "keep", "late", "--forever").stdout
        assert "late: kept" in kept, kept
        listed = herd(root, "preview", "ls").stdout
        assert next(line for line in listed.splitlines() if line.startswith("late")).rstrip().endswith("kept")
    finally:
        if preview_row(root, "late") is not None:
            herd(root, "preview", "rm", "late", check=False)
        stop_project(root)
