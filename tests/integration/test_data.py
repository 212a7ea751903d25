"""The data step of a deploy, on each driver: a migration runs once from the new image on a
snapshotted volume; a failed one restores the data byte for byte while the old release serves on;
a migration followed by a failed release keeps the data migrated (and says so) unless
`rollback_data` asks for the snapshot back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herdsman.deploy.volumes import tree_digest
from herdsman.state import StateStore
from tests.helpers import Load, hello_copy, herd, instances, stop_project, volume_dir


@pytest.fixture
def project(tmp_path: Path, driver_name: str, request: pytest.FixtureRequest) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "hello"
    port = hello_copy(
        root, template=request.getfixturevalue("debian_hello") if driver_name == "docker" else None
    )
    yield root, port
    stop_project(root)


def counter(root: Path) -> Path:
    return volume_dir(root, "counter") / "visits"


BAD_MIGRATION = """import os, sys
from pathlib import Path
data = Path(os.environ.get("DATA_DIR", "/data"))
(data / "visits").write_text("half-migrated garbage")
(data / "new-table").write_text("created by the migration")
print("migration: something went wrong", flush=True)
sys.exit(2)
"""


def test_a_migration_runs_from_the_new_image_on_a_snapshotted_volume(project: tuple[Path, int]) -> None:
    root, port = project
    herd(root, "deploy")
    counter(root).write_text("41")  # data in the old format
    (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
    out = herd(root, "deploy").stdout
    assert "migrating (python3 migrate.py)" in out and "snapshot of volume counter taken" in out
    assert json.loads(counter(root).read_text()) == {"visits": 41, "schema": 2}
    assert "visit number <b id=visits>42</b>" in httpx.get(f"http://127.0.0.1:{port}/").text
    assert (root / ".herd" / "snapshots" / "2" / "counter" / "visits").read_text() == "41"
    logs = herd(root, "logs", "--release", "2").stdout
    assert "counter migrated to schema 2 (41 visits)" in logs, (
        "its output is in the log store, under the release"
    )
    events = herd(root, "events", "--kind", "migrate").stdout
    assert "web: migration of release 2 done" in events
    assert all(i["release"] == "2" for i in instances(root)), "no one-off instance is left behind"


def test_a_failed_migration_restores_the_data_and_the_old_release_serves(project: tuple[Path, int]) -> None:
    root, port = project
    herd(root, "deploy")
    for _ in range(3):
        httpx.get(f"http://127.0.0.1:{port}/")
    (volume_dir(root, "counter") / "notes").mkdir(exist_ok=True)
    (volume_dir(root, "counter") / "notes" / "a.txt").write_text("keep me\n")
    before = tree_digest(volume_dir(root, "counter"))
    (root / "app" / "migrate.py").write_text(BAD_MIGRATION)
    with Load(f"http://127.0.0.1:{port}/healthz") as load:  # reads only: the data must stay as it was
        result = herd(root, "deploy", check=False)
        time.sleep(0.3)
    assert result.returncode == 1
    assert "the migration web-2-migrate exited with code 2" in result.stderr
    assert "migration: something went wrong" in result.stderr
    assert "restored from the snapshot" in result.stderr
    assert tree_digest(volume_dir(root, "counter")) == before, "byte for byte"
    assert not (volume_dir(root, "counter") / "new-table").exists()
    assert load.failures == [], load.failures[:5]
    assert set(load.served) == {"1"} and len(load.served) > 10
    state = StateStore(root / ".herd" / "state.db")
    assert state.release("production", 2).status == "failed"
    running = [i for i in instances(root) if i["state"] == "running"]
    assert {i["release"] for i in running} == {"1"} and len(running) == 2


@pytest.mark.parametrize("rollback_data", [False, True])
def test_migrated_data_after_a_failed_release(tmp_path: Path, rollback_data: bool) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")
        counter(root).write_text("7")
        app = root / "app" / "app.py"
        app.write_text(
            app.read_text().replace("def main() -> None:", "def main() -> None:\n    raise SystemExit(3)")
        )
        if rollback_data:
            toml = root / "herd.toml"
            toml.write_text(
                toml.read_text().replace(
                    'command = ["python3", "migrate.py"]',
                    'command = ["python3", "migrate.py"]\nrollback_data = true',
                )
            )
        result = herd(root, "deploy", check=False)
        assert result.returncode == 1 and "crashed before it became healthy" in result.stderr
        if rollback_data:
            assert "restored from the snapshot (rollback_data = true)" in result.stderr
            assert counter(root).read_text() == "7"
        else:
            assert "data STAYS MIGRATED" in result.stderr and "must tolerate the new schema" in result.stderr
            assert json.loads(counter(root).read_text()) == {"visits": 7, "schema": 2}
    finally:
        stop_project(root)
