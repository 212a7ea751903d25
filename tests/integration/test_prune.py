"""`herd prune` (issue 16): old images, unpacked images and logs go; nothing a retained release,
a running instance or a deploy in progress needs; a dry run says why each thing stays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import Load, hello_copy, herd, instances, stop_project, wait_for


def change_app(root: Path, n: int) -> None:
    app = root / "app" / "app.py"
    app.write_text(app.read_text() + f"\n# change {n}\n")


def images_of(root: Path) -> dict[int, str]:
    from herdsman.state import StateStore

    state = StateStore(root / ".herd" / "state.db")
    try:
        return {r.number: r.services()["web"].image for r in state.releases("production")}
    finally:
        state.close()


def stored(root: Path, digest: str) -> bool:
    return (root / ".herd" / "images" / "blobs" / "sha256" / digest.removeprefix("sha256:")).exists()


def test_prune_keeps_the_last_releases_and_what_runs_and_rollback_still_works(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[retention]\nreleases = 2\ngrace = "0s"\nlogs_for = "0s"\n')
    try:
        for n in range(3):  # releases 1, 2, 3, each with an image of its own
            change_app(root, n)
            herd(root, "deploy")
        images = images_of(root)
        assert len(set(images.values())) == 3
        index_before = (root / ".herd" / "images" / "index.json").read_bytes()
        dry = herd(root, "prune", "--dry-run").stdout
        assert f"would remove image web {images[1]}" in dry
        assert "one of the last 2" in dry and "(current)" in dry and "runs it (running)" in dry
        assert (root / ".herd" / "images" / "index.json").read_bytes() == index_before  # a dry run
        assert stored(root, images[1])
        with Load(f"http://127.0.0.1:{port}/") as load:
            out = herd(root, "prune").stdout
        assert load.failures == []
        assert f"removed image web {images[1]}" in out and "freed" in out
        assert not stored(root, images[1]) and stored(root, images[2]) and stored(root, images[3])
        index = json.loads((root / ".herd" / "images" / "index.json").read_text())
        assert images[1] not in {m["digest"] for m in index["manifests"]}
        for manifest in index["manifests"]:  # the store stays whole: every blob an entry names is there
            named = json.loads(
                (root / ".herd/images/blobs/sha256" / manifest["digest"].removeprefix("sha256:")).read_text()
            )
            for blob in [named["config"], *named["layers"]]:
                assert stored(root, blob["digest"]), blob
        assert not (root / ".herd" / "rootfs" / images[1].removeprefix("sha256:")).exists()
        running = {i["id"] for i in instances(root)}
        assert all((root / ".herd" / "logs" / "web" / f"{i}.log").exists() for i in running)
        herd(root, "rollback", "2")  # a retained release rolls back
        assert {i["release"] for i in instances(root)} == {"4"}
        gone = herd(root, "rollback", "1", check=False)  # a pruned one is refused before anything starts
        assert gone.returncode != 0 and "no longer stored" in gone.stderr and "herd pull" in gone.stderr
        assert {i["release"] for i in instances(root)} == {"4"}
    finally:
        stop_project(root)


def test_prune_while_a_deploy_runs_under_load_waits_for_it(tmp_path: Path) -> None:
    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[retention]\nreleases = 1\ngrace = "0s"\n')
    try:
        herd(root, "deploy")
        change_app(root, 1)
        with Load(f"http://127.0.0.1:{port}/") as load:
            deploying = subprocess.Popen(
                [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "deploy"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            wait_for(lambda: "to release 2 started" in herd(root, "events", "--kind", "rollout").stdout, 60)
            pruned = herd(root, "prune", timeout=180)  # waits for the deploy's lock
            out, _ = deploying.communicate(timeout=180)
        assert deploying.returncode == 0, out
        assert load.failures == []
        images = images_of(root)
        assert stored(root, images[2])  # what the deploy rolled out survived the prune beside it
        assert {i["release"] for i in instances(root)} == {"2"}
        assert "kept" in pruned.stdout
    finally:
        stop_project(root)


def test_a_prune_killed_at_any_moment_leaves_a_whole_store(tmp_path: Path) -> None:
    """Like `git gc`: SIGKILLed at several moments, every image the index names is still whole,
    and the next prune finishes the sweep; retained releases still roll back."""
    import random
    import signal
    import time

    root = tmp_path / "hello"
    hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[retention]\nreleases = 1\ngrace = "0s"\n')
    rng = random.Random(1202)
    try:
        for n in range(3):
            change_app(root, n)
            herd(root, "deploy")
        command = [sys.executable, "-m", "herdsman", "-f", str(root / "herd.toml"), "prune"]
        for _ in range(5):
            victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.5))  # python start-up, marking, or sweeping
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            index = json.loads((root / ".herd" / "images" / "index.json").read_text())
            for manifest in index["manifests"]:
                assert stored(root, manifest["digest"]), manifest
                named = json.loads(
                    (
                        root / ".herd/images/blobs/sha256" / manifest["digest"].removeprefix("sha256:")
                    ).read_text()
                )
                for blob in [named["config"], *named.get("layers", [])]:
                    assert stored(root, blob["digest"]), blob
        herd(root, "prune")  # finishes what the killed ones left
        images = images_of(root)
        assert not stored(root, images[1]) and stored(root, images[3])
        assert {i["release"] for i in instances(root)} == {"3"}
        herd(root, "deploy", "--force")  # the store still bakes and deploys
        assert {i["release"] for i in instances(root)} == {"4"}
    finally:
        stop_project(root)


def test_the_agent_prunes_on_a_schedule_and_says_what_it_freed(tmp_path: Path) -> None:
    """`[retention] prune_every`: a running agent prunes by itself (the same rules as `herd prune`,
    under the deploy lock); an event says what was freed; the current release keeps serving."""
    from herdsman.state import StateStore

    root = tmp_path / "hello"
    port = hello_copy(root)
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + '\n[retention]\nreleases = 1\ngrace = "0s"\nprune_every = "2s"\n')
    try:
        for n in range(2):  # releases 1 and 2, each with an image of its own
            change_app(root, n)
            herd(root, "deploy")
        images = images_of(root)
        assert stored(root, images[1])
        with Load(f"http://127.0.0.1:{port}/") as load:
            herd(root, "up", "-d", "--no-deploy")

            def pruned() -> list[dict[str, object]]:
                state = StateStore(root / ".herd" / "state.db")
                try:
                    return state.events("production", kinds=("prune",))
                finally:
                    state.close()

            events = wait_for(pruned, 90, every=0.5)
        assert load.failures == []
        message = str(events[0]["message"])
        assert message.startswith("pruned 1 image(s)") and "freed" in message, message
        assert f"web {images[1]}" in json.dumps(events[0]["data"])
        assert not stored(root, images[1]) and stored(root, images[2])
        assert {i["release"] for i in instances(root)} == {"2"}
    finally:
        stop_project(root)
