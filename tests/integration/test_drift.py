"""Drift on real instances: a file changed inside an unpacked image, or an instance started by hand
with other environment, is found by `herd verify` (and by the agent on its schedule), and the agent
replaces it under load, keeping the differences for inspection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest

from herdsman.deploy.environments import make_driver
from herdsman.image.filelist import list_path
from herdsman.spec import load_project
from herdsman.state import StateStore
from tests.helpers import Load, driver_of, hello_copy, herd, instances, stop_project, wait_for


@pytest.fixture
def project(hello_on_driver: tuple[Path, int]) -> tuple[Path, int]:
    return hello_on_driver


def running(root: Path) -> set[str]:
    return {i["id"] for i in instances(root) if i["state"] == "running"}


def test_a_changed_file_in_an_unpacked_image_is_found_and_replaced(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text().replace('name = "hello"', 'name = "hello"\nverify_every = "1s"', 1))
    try:
        herd(root, "deploy")
        assert "every running instance matches" in herd(root, "verify").stdout
        image = StateStore(root / ".herd" / "state.db").release("production", 1).services()["web"].image
        rootfs = root / ".herd" / "rootfs" / image.removeprefix("sha256:")
        assert list_path(rootfs).exists(), "the file list is recorded at unpack"
        app = rootfs / "app" / "app.py"
        original = app.read_text()
        app.write_text(original + "\n# tampered on the host\n")

        found = herd(root, "verify", check=False)
        assert found.returncode == 1
        assert "drifted (reported)" in found.stdout and "/app/app.py (modified)" in found.stdout
        before = running(root)
        with Load(f"http://127.0.0.1:{port}/") as load:
            herd(root, "up", "-d", "--no-deploy")  # the agent checks every second, and replaces
            after = wait_for(lambda: (ids := running(root)) and len(ids) == 2 and not ids & before and ids)
            time.sleep(0.3)
        assert load.failures == [], load.failures[:5]
        assert after and app.read_text() == original, "replacements run from a fresh unpack"
        for gone in before:
            kept = root / ".herd" / "quarantine" / gone
            record = json.loads((kept / "instance.json").read_text())
            assert record["reason"].startswith("drifted: file system")
            assert "# tampered on the host" in (kept / "drift" / "files" / "app" / "app.py").read_text()
        shown = herd(root, "inspect", sorted(before)[0]).stdout
        assert "/app/app.py (modified)" in shown
        assert "every running instance matches" in herd(root, "verify").stdout
        assert "drifted (replaced)" in herd(root, "events", "--kind", "drift").stdout
    finally:
        stop_project(root)


def test_an_instance_started_with_other_env_is_found_and_replaced(project: tuple[Path, int]) -> None:
    root, port = project
    herd(root, "deploy")
    victim = sorted(running(root))[0]
    project_ = load_project(root / "herd.toml")
    driver = make_driver(driver_of(root), root / ".herd", project_)
    spec = asyncio.run(started_spec(root, victim))
    # someone restarts the instance by hand, with a setting of their own
    asyncio.run(driver.stop(victim, 5))
    tampered = dataclasses.replace(spec, env={**spec.env, "GREETING": "Hacked", "DEBUG": "1"})
    asyncio.run(driver.start(tampered))
    found = herd(root, "verify", check=False)
    assert found.returncode == 1 and victim in found.stdout
    assert (
        "GREETING: 'Hello from herdsman' -> 'Hacked'" in found.stdout and "DEBUG: added '1'" in found.stdout
    )

    herd(root, "up", "-d", "--no-deploy")
    with Load(f"http://127.0.0.1:{port}/") as load:
        through_agent = herd(root, "verify", check=False)
        assert "drifted (replaced)" in through_agent.stdout
        wait_for(lambda: (ids := running(root)) and len(ids) == 2 and victim not in ids)
        time.sleep(0.3)
    assert load.failures == [], load.failures[:5]
    assert "Hacked" not in herd(root, "verify").stdout
    kept = json.loads((root / ".herd" / "quarantine" / victim / "instance.json").read_text())
    assert "environment: DEBUG: added '1'" in kept["reason"]


async def started_spec(root: Path, instance: str):  # type: ignore[no-untyped-def]
    """The spec the release gives ``instance`` (what `herd verify` compares it with)."""
    from herdsman.deploy.instances import instance_spec
    from herdsman.image.bake import image_store

    project = load_project(root / "herd.toml")
    release = StateStore(root / ".herd" / "state.db").release("production", 1)
    entry = release.services()["web"]
    return instance_spec(
        instance_id=instance,
        stack=project.stack.name,
        stack_id=project.stack_id,
        env_name="production",
        service="web",
        release=1,
        entry=entry,
        image_config=image_store(project).config(entry.image),
        home=root / ".herd",
        secrets={},
    )
