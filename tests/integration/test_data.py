"""The data step of a deploy, on each driver: a migration runs once from the new image on a
snapshotted volume; a failed one restores the data byte for byte while the old release serves on;
a migration followed by a failed release keeps the data migrated (and says so) unless
`rollback_data` asks for the snapshot back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from herdsman.deploy.volumes import tree_digest
from herdsman.state import StateStore
from tests.helpers import Load, hello_copy, herd, instances, stop_project, volume_dir


@pytest.fixture
def project(hello_on_driver: tuple[Path, int]) -> tuple[Path, int]:
    return hello_on_driver


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


def visits(root: Path) -> int:
    return int(json.loads(counter(root).read_text())["visits"])


def tampered(archive: Path, out: Path) -> Path:
    """A copy of a backup with one file's content changed and its manifest left as it was."""
    import io
    import tarfile

    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "visits":
                data = b'{"visits": 999999, "schema": 2}'
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


def test_backup_and_restore_round_trip_and_a_corrupt_backup_is_refused(
    project: tuple[Path, int], tmp_path: Path
) -> None:
    root, port = project
    url = f"http://127.0.0.1:{port}/"
    herd(root, "deploy")
    for _ in range(3):
        httpx.get(url)
    archive = tmp_path / "counter.tar"
    assert "wrote" in herd(root, "volume", "backup", "counter", str(archive)).stdout
    for _ in range(2):
        httpx.get(url)
    assert visits(root) == 5
    before = {i["id"] for i in instances(root)}
    out = herd(root, "volume", "restore", "counter", str(archive), "--yes").stdout
    assert "every digest checks out" in out and "web replaced" in out
    assert visits(root) == 3, "the data is the backup's again"
    after = {i["id"] for i in instances(root) if i["state"] == "running"}
    assert len(after) == 2 and not after & before, "the instances were replaced, not written under"
    assert "visit number <b id=visits>4</b>" in httpx.get(url).text

    bad = herd(
        root,
        "volume",
        "restore",
        "counter",
        str(tampered(archive, tmp_path / "bad.tar")),
        "--yes",
        check=False,
    )
    assert bad.returncode == 1 and "is corrupt: visits" in bad.stderr and "nothing was changed" in bad.stderr
    assert visits(root) == 4
    assert {i["id"] for i in instances(root) if i["state"] == "running"} == after
    listing = herd(root, "volume", "ls").stdout
    assert "counter" in listing and "keep 5" in listing


def test_rollback_warns_that_data_stays_migrated_and_can_restore_it(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    hello_copy(root)
    try:
        herd(root, "deploy")  # release 1
        counter(root).write_text("5")  # data in the old format
        (root / "app" / "app.py").write_text((root / "app" / "app.py").read_text() + "\n# release 2\n")
        herd(root, "deploy")  # release 2 migrates it
        assert json.loads(counter(root).read_text()) == {"visits": 5, "schema": 2}
        plain = herd(root, "rollback", "1").stdout  # release 3
        assert "data is not rolled back: release 2 (web) migrated it" in plain and "--restore-data" in plain
        assert json.loads(counter(root).read_text())["schema"] == 2
        herd(root, "rollback", "2")  # release 4: a rollback never runs a migration
        assert "snapshot" in herd(root, "volume", "snapshots").stdout
        herd(root, "rollback", "1", "--restore-data", "--yes")  # release 5, on the data before release 2
        assert counter(root).read_text() == "5"
        running = [i for i in instances(root) if i["state"] == "running"]
        assert {i["release"] for i in running} == {"5"} and len(running) == 2
        assert "volume counter restored" in herd(root, "events", "--kind", "volume").stdout
    finally:
        stop_project(root)


def test_volume_data_survives_20_deploys_and_5_rollbacks(project: tuple[Path, int]) -> None:
    root, port = project
    url = f"http://127.0.0.1:{port}/"
    app = root / "app" / "app.py"
    original = app.read_text()
    expected = 0
    for n in range(20):
        app.write_text(original + f"\n# deploy {n}\n")
        herd(root, "deploy")
        httpx.get(url)
        expected += 1
        if n % 4 == 3:  # five rollbacks along the way
            herd(root, "rollback")
            httpx.get(url)
            expected += 1
    assert visits(root) == expected == 25
    assert len(StateStore(root / ".herd" / "state.db").releases("production")) == 25
    snapshots = sorted((root / ".herd" / "snapshots").iterdir())
    assert len(snapshots) == 5, "only the snapshots of the last 5 migrating releases are kept"


def test_concurrent_visits_across_two_instances_are_counted_exactly(project: tuple[Path, int]) -> None:
    """examples/hello's counter under 200 concurrent visits spread over its two instances: an
    flock across instances and a temp file per writer make every increment count, once."""
    root, port = project
    herd(root, "deploy")
    total, parallel = 200, 20

    async def visit_all() -> list[str]:
        limit = asyncio.Semaphore(parallel)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one() -> str:
                async with limit:
                    response = await client.get(f"http://127.0.0.1:{port}/")
                    assert response.status_code == 200, response.text
                    return response.text

            return await asyncio.gather(*(one() for _ in range(total)))

    pages = asyncio.run(visit_all())
    numbers = sorted(int(re.search(r"<b id=visits>(\d+)</b>", page).group(1)) for page in pages)  # type: ignore[union-attr]
    served_by = {re.search(r"<code>([^<]+)</code>", page).group(1) for page in pages}  # type: ignore[union-attr]
    assert len(served_by) == 2, f"both instances served: {served_by}"
    assert numbers == list(range(1, total + 1)), "each visit got its own number"
    assert visits(root) == total
    logs = herd(root, "logs").stdout
    assert "Traceback" not in logs, logs[-2000:]


def test_a_restore_stages_the_copy_while_the_service_serves(tmp_path: Path) -> None:
    """`herd volume restore` under a bounded load: while the backup is copied and verified beside
    the volume, every request succeeds; requests fail (the router's 503, pool empty) only between
    the instances' stop and their replacements' admission — the swap and a start."""
    import subprocess
    import sys
    import threading

    root = tmp_path / "hello"
    port = hello_copy(root)
    try:
        herd(root, "deploy")
        volume = volume_dir(root, "counter")
        for number in range(12):  # 96 MB: a copy that takes a while
            (volume / f"blob-{number}.bin").write_bytes(os.urandom(8 << 20))
        archive = tmp_path / "counter.tar"
        herd(root, "volume", "backup", "counter", str(archive))
        answers: list[tuple[float, int]] = []
        stop = threading.Event()

        def client() -> None:
            deadline = time.monotonic() + 180  # bounded whatever happens
            with httpx.Client(timeout=10) as http:
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        status = http.get(f"http://127.0.0.1:{port}/healthz").status_code
                    except httpx.HTTPError:
                        status = 0
                    answers.append((time.monotonic(), status))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        argv = [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml")]
        restore = subprocess.Popen(
            [*argv, "volume", "restore", "counter", str(archive), "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert restore.stdout is not None
        lines = [(time.monotonic(), line.rstrip()) for line in restore.stdout]
        assert restore.wait(timeout=180) == 0, lines
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop_project(root)

    def at(words: str) -> float:
        return next(t for t, line in lines if words in line)

    copying, staged, stopped = at("copying the new data"), at("staged and verified"), at("stopped web")
    back = at("web back after")
    during_copy = [status for t, status in answers if copying <= t <= staged]
    failed = [t for t, status in answers if status != 200]
    assert during_copy and set(during_copy) == {200}, "the service serves while the copy is made"
    assert failed and all(staged <= t <= back + 0.5 for t in failed), "failures only around the swap"
    print(
        f"copy {staged - copying:.2f}s with {len(during_copy)} requests served; "
        f"{len(failed)} failed over {failed[-1] - failed[0]:.2f}s; stop to back {back - stopped:.2f}s"
    )
    assert len(list(volume.glob("blob-*.bin"))) == 12
