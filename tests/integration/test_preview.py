"""Previews on real processes (issue 16): a preview runs production's exact release on its own
instances, volume, logs and address; production's instances, volumes and routes are byte-identical
before and after the preview's whole life (created, served, written to, expired, removed by the
agent); an expired preview takes no deploy; [preview] max caps how many exist."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from herdsman.state import StateStore
from tests.helpers import (
    docker_cmd,
    hello_copy,
    herd,
    on_docker,
    stack_id,
    stop_project,
    volume_dir,
    wait_for,
)


def production_bytes(root: Path) -> dict[str, str]:
    """Every record that says what production runs, where it routes and what its volume holds, as
    digests: its instances (the process driver's records, or the containers as the engine reports
    them), production's routes and pools in the router's state, and its volume's files."""
    herd_dir = root / ".herd"
    out = {}
    if on_docker(root):
        label = f"label=herd.stack-id={stack_id(root)}"
        ids = subprocess.run(
            [*docker_cmd(root), "ps", "-aq", "--filter", label, "--filter", "label=herd.env=production"],
            capture_output=True,
            text=True,
        ).stdout.split()
        for container in sorted(ids):
            inspect = subprocess.run([*docker_cmd(root), "inspect", container], capture_output=True)
            info = json.loads(inspect.stdout)[0]
            for part in ("Id", "Created", "State", "Config", "Mounts"):  # a difference names its part
                value = json.dumps(info[part], sort_keys=True)
                out[f"container {info['Name']} {part}"] = (
                    f"{hashlib.sha256(value.encode()).hexdigest()} {value[:300]}"
                )
    else:
        for record in sorted((herd_dir / "run" / "instances").glob("*.json")):
            if json.loads(record.read_text())["labels"]["herd.env"] == "production":
                out[str(record.relative_to(herd_dir))] = hashlib.sha256(record.read_bytes()).hexdigest()
    assert out, "production runs nothing"
    router = json.loads((herd_dir / "run" / "router.json").read_text())
    mine = {
        "routes": [r for r in router["routes"] if r["name"].startswith("production/")],
        "pools": {k: v for k, v in router["pools"].items() if k.startswith("production/")},
    }
    out["router"] = hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()
    data = volume_dir(root, "counter")
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        out[f"volume {path.relative_to(data)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def own_volume(root: Path, name: str) -> Path | None:
    """Where the preview's volume keeps its data (None: it does not exist)."""
    if on_docker(root):
        volume = f"herd-{stack_id(root)}-{name}"
        found = subprocess.run(
            [*docker_cmd(root), "volume", "inspect", "-f", "{{.Mountpoint}}", volume],
            capture_output=True,
            text=True,
        )
        return Path(found.stdout.strip()) if found.returncode == 0 else None
    path = root / ".herd" / "volumes" / name
    return path if path.exists() else None


def visits(url: str) -> int:
    found = re.search(r"<b id=visits>(\d+)</b>", httpx.get(url, timeout=10).text)
    assert found, url
    return int(found.group(1))


def preview_row(root: Path, name: str) -> dict[str, object] | None:
    state = StateStore(root / ".herd" / "state.db")
    try:
        return state.preview(name)
    finally:
        state.close()


def test_a_preview_lives_and_dies_without_touching_production(hello_on_driver: tuple[Path, int]) -> None:
    """On each driver (process, docker, swarm: the `driver_name` fixture)."""
    root, port = hello_on_driver
    toml = root / "herd.toml"
    toml.write_text(toml.read_text() + "\n[preview]\nmax = 1\n")
    try:
        herd(root, "deploy")
        production = f"http://127.0.0.1:{port}/"
        assert visits(production) == 1  # production's volume holds data before the preview exists
        assert visits(production) == 2
        before = production_bytes(root)
        assert any(k.startswith("volume ") for k in before)
        router_file = (root / ".herd" / "run" / "router.json").read_bytes()

        made = herd(root, "preview", "create", "pr-1", "--ttl", "45s", "--copy-volumes").stdout
        assert "preview pr-1 serves release 1 (release 1 of production)" in made, made
        address = re.search(r"web: (http://127\.0\.0\.1:\d+/)", made)
        assert address, made
        url = address.group(1)
        assert url != production
        # its own volume, a copy of production's: counting goes on from production's 2, there only
        assert [visits(url) for _ in range(3)] == [3, 4, 5]
        served = httpx.get(url, timeout=10).text
        assert "preview-pr-1-web-1-" in served  # its own instance
        assert production_bytes(root) == before  # production untouched while the preview serves
        preview_volume = own_volume(root, "preview-pr-1.counter")
        assert preview_volume is not None
        assert json.loads((preview_volume / "visits").read_text())["visits"] == 6
        listed = herd(root, "preview", "ls").stdout
        assert "pr-1" in listed and url.rstrip("/") in listed and "release 1 of production" in listed
        logs = herd(root, "preview", "logs", "pr-1").stdout
        assert "preview-pr-1-web-1-" in logs and "GET / HTTP" in logs
        assert "preview-pr-1" not in herd(root, "logs").stdout  # production's logs are production's
        capped = herd(root, "preview", "create", "pr-2", check=False)
        assert capped.returncode != 0 and "[preview] max = 1" in capped.stderr

        row = preview_row(root, "pr-1")
        assert row is not None
        wait_for(lambda: time.time() > float(row["expires"]) + 0.5, 60, every=0.2)  # type: ignore[arg-type]
        refused = herd(root, "deploy", "--env", "preview-pr-1", check=False)
        assert refused.returncode != 0 and "expired" in refused.stderr, refused.stderr
        assert preview_row(root, "pr-1") is not None  # nothing removed it yet: the agent will

        herd(root, "up", "-d", "--no-deploy")
        wait_for(lambda: preview_row(root, "pr-1") is None, 90, every=0.25)
        state = StateStore(root / ".herd" / "state.db")
        try:
            messages = [e["message"] for e in state.events("production", kinds=("preview",))]
        finally:
            state.close()
        assert any(m.startswith("preview pr-1 removed (expired)") for m in messages), messages
        assert own_volume(root, "preview-pr-1.counter") is None
        assert not (root / ".herd" / "logs" / "@preview-pr-1").exists()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
        assert production_bytes(root) == before  # byte for byte, after the preview's whole life
        assert (root / ".herd" / "run" / "router.json").read_bytes() == router_file  # no route left
        if not on_docker(root):
            assert sorted(p.name for p in (root / ".herd" / "volumes").iterdir()) == ["counter"]
        assert visits(production) == 3  # and production counts on from where it was
    finally:
        if preview_row(root, "pr-1") is not None:  # a failure midway: its instances must not outlive it
            herd(root, "preview", "rm", "pr-1", check=False)


def test_a_preview_from_the_working_tree_and_removed_by_hand(tmp_path: Path) -> None:
    """--from-files bakes the files (the same cache); its volume starts empty; `herd preview rm`
    takes its instances, route, volume and logs away; every preview command expires the expired."""
    root = tmp_path / "hello"
    port = hello_copy(root)
    try:
        herd(root, "deploy")
        app = root / "app" / "app.py"
        app.write_text(app.read_text().replace("visit number", "preview visit number"))
        before = production_bytes(root)
        made = herd(root, "preview", "create", "files", "--from-files", "--replicas", "2").stdout
        assert "the working tree" in made, made
        url = re.search(r"web: (http://127\.0\.0\.1:\d+/)", made).group(1)  # type: ignore[union-attr]
        page = httpx.get(url, timeout=10).text
        assert "preview visit number <b id=visits>1</b>" in page  # the new files, an empty volume
        assert "preview visit" not in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        app.write_text(app.read_text().replace("preview visit number", "second preview visit number"))
        herd(root, "deploy", "--env", "preview-files")  # a deploy to a live preview: its own route
        page = httpx.get(url, timeout=10).text
        assert "second preview visit number <b id=visits>2</b>" in page and "of release 2" in page
        assert "second preview" not in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert "of preview-files" in herd(root, "prune", "--dry-run").stdout  # its image is kept
        herd(root, "preview", "rm", "files")
        assert "of preview-files" not in herd(root, "prune", "--dry-run").stdout  # no longer for it
        assert "no preview" in herd(root, "preview", "ls").stdout
        assert not (root / ".herd" / "volumes" / "preview-files.counter").exists()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=5)
        hosted = herd(
            root, "preview", "create", "hosted", "--host", "--from-files"
        ).stdout  # on production's listener
        assert f"web: http://hosted.preview.localhost:{port}/" in hosted, hosted
        by_host = httpx.get(
            f"http://127.0.0.1:{port}/", headers={"Host": f"hosted.preview.localhost:{port}"}, timeout=10
        ).text
        assert "preview visit number" in by_host and "preview-hosted-web-" in by_host
        plain = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert "preview visit" not in plain and "preview-hosted" not in plain  # the rest: production
        herd(root, "preview", "rm", "hosted")
        assert production_bytes(root)["router"] == before["router"]
        herd(root, "preview", "create", "short", "--ttl", "1s")
        time.sleep(1.5)
        assert "no preview" in herd(root, "preview", "ls").stdout  # removed by the command, no agent
        after = production_bytes(root)  # production counted a visit; its instances and routes stayed
        assert {k: v for k, v in after.items() if not k.startswith("volume ")} == {
            k: v for k, v in before.items() if not k.startswith("volume ")
        }
    finally:
        for name in ("files", "hosted", "short"):
            if preview_row(root, name) is not None:
                herd(root, "preview", "rm", name, check=False)
        stop_project(root)
