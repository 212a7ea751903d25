"""`herd prune`: what piles up (images, unpacked root file systems, logs, snapshots) goes, and
nothing a running, quarantined or retained instance or release needs.

Like `git gc`, it marks then sweeps, and a kill at any moment leaves the store consistent: what is
kept is decided first (the roots, each with the reason it is kept), then index.json is rewritten
atomically without the images that go, and only then are unreachable blobs deleted — so no index
entry ever names a missing blob; a killed sweep leaves unreachable blobs for the next prune.
A blob younger than `grace` is never deleted (a bake in progress writes blobs before its index
entry), and the sweep holds the deploy lock of every environment, so no rollout starts from an
image being deleted. The layer cache tolerates a missing blob (a hit needs the blob).

Roots: the images of the last `[retention] releases` releases of each environment and its
current one (of a preview only while it exists), failed releases younger than `failed_for`, every
running instance's image (as its driver lists it), every quarantined instance's image, the newest
bake of each service, and every image that is not one of this stack's bakes (bases and pulled
images: the next bake needs them).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdsman.deploy.environments import deploy_lock
from herdsman.deploy.instances import is_preview
from herdsman.deploy.preview_spec import preview_name
from herdsman.deploy.run import Deployment
from herdsman.deploy.volumes import prune_snapshots
from herdsman.image.assemble import ANNOTATION_SERVICE, ANNOTATION_STACK
from herdsman.image.bake import image_store
from herdsman.image.oci import ImageStore
from herdsman.spec import Project, herd_home
from herdsman.state import StateStore


@dataclass
class Pruned:
    """What a prune removed (or, dry, would remove), what it kept and why."""

    kept: dict[str, list[str]] = field(default_factory=dict)  # image digest -> reasons
    images: list[str] = field(default_factory=list)  # index entries removed
    blobs: int = 0
    rootfs: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    freed: int = 0  # bytes


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


async def roots(project: Project, state: StateStore, store: ImageStore) -> dict[str, list[str]]:
    """Every image that must stay, with why."""
    retention = project.stack.retention
    kept: dict[str, list[str]] = {}

    def keep(digest: str, why: str) -> None:
        kept.setdefault(digest, []).append(why)

    now = time.time()
    for env in sorted(set(state.environments()) | {project.stack.stack.environment}):
        if is_preview(env) and state.preview(preview_name(env)) is None:
            continue  # a removed preview: its releases stay in the history, its images need not
        releases = state.releases(env)
        current = state.current_release(env)
        recent = {r.number for r in releases[-retention.releases :]}
        for release in releases:
            reasons = []
            if release.number in recent:
                reasons.append(f"release {release.number} of {env} (one of the last {retention.releases})")
            if current is not None and release.number == current.number:
                reasons.append(f"release {release.number} of {env} (current)")
            if release.status == "failed" and now - release.created < retention.failed_for:
                reasons.append(f"release {release.number} of {env} (failed, kept for a post-mortem)")
            for why in reasons:
                for service, entry in release.services().items():
                    keep(entry.image, f"{why}: {service}")
        deployment = Deployment(project, env)
        try:
            for instance in await deployment.driver.list(deployment.executor.target.selector):
                image = instance.labels.get("herd.image")
                if image:
                    keep(image, f"instance {instance.id} of {env} runs it ({instance.state})")
        finally:
            deployment.state.close()
    for record in sorted((herd_home(project) / "quarantine").glob("*/instance.json")):
        with contextlib.suppress(OSError, ValueError):
            image = json.loads(record.read_text()).get("image")
            if image:
                keep(str(image), f"quarantined instance {record.parent.name}")
    newest: set[str] = set()
    for item in reversed(store.index()):
        ann = item.annotations
        baked = ann.get(ANNOTATION_SERVICE)
        if ann.get(ANNOTATION_STACK) != project.stack.name or baked is None:
            keep(item.digest, "a base or pulled image (the next bake may need it)")
        elif baked not in newest:
            newest.add(baked)
            keep(item.digest, f"the newest bake of {baked}")
    return kept


def reachable(store: ImageStore, digests: set[str]) -> set[str]:
    """The blobs of ``digests`` (manifests or indexes) and everything they name."""
    seen: set[str] = set()
    todo = list(digests)
    while todo:
        digest = todo.pop()
        if digest in seen or not store.has_blob(digest):
            continue
        seen.add(digest)
        try:
            document: dict[str, Any] = store.read_json(digest)
        except Exception:  # a layer, or not JSON: nothing below it
            continue
        if not isinstance(document, dict):
            continue
        config = document.get("config")
        if isinstance(config, dict) and "digest" in config:
            todo.append(config["digest"])
        for key in ("layers", "manifests"):
            for item in document.get(key, []) or []:
                if isinstance(item, dict) and "digest" in item:
                    todo.append(item["digest"])
    return seen


def _blobs(store: ImageStore) -> Iterator[tuple[str, Path]]:
    root = store.root / "blobs" / "sha256"
    if root.is_dir():
        for path in root.iterdir():
            if not path.name.startswith("."):
                yield f"sha256:{path.name}", path


async def prune(project: Project, *, dry_run: bool = False, wait: float = 60.0) -> Pruned:
    """Mark, then (unless ``dry_run``) sweep; see the module's docstring."""
    home = herd_home(project)
    state = StateStore(home / "state.db")
    store = image_store(project)
    retention = project.stack.retention
    result = Pruned()
    envs = sorted(set(state.environments()) | {project.stack.stack.environment})
    with contextlib.ExitStack() as locks:
        for env in envs:
            locks.enter_context(deploy_lock(home, env, wait, task="prune"))
        result.kept = await roots(project, state, store)
        keep = reachable(store, set(result.kept))
        now = time.time()
        going = [entry for entry in store.index() if entry.digest not in result.kept]
        result.images = [e.annotations.get(ANNOTATION_SERVICE, e.digest) + f" {e.digest}" for e in going]
        if going and not dry_run:  # the index first: it never names a blob that is gone
            store.remove_from_index({e.digest for e in going})
        for digest, path in list(_blobs(store)):
            if digest in keep or now - path.stat().st_mtime < retention.grace:
                continue
            result.blobs += 1
            result.freed += _size(path)
            if not dry_run:
                path.unlink(missing_ok=True)
        rootfs = home / "rootfs"
        if rootfs.is_dir():
            for path in sorted(rootfs.iterdir()):
                digest = "sha256:" + path.name.split(".", 1)[0]
                if path.name.startswith(".") or digest in result.kept:
                    continue
                result.rootfs.append(path.name)
                result.freed += _size(path)
                if not dry_run:
                    (shutil.rmtree if path.is_dir() and not path.is_symlink() else Path.unlink)(path)
        running = {
            name
            for reasons in result.kept.values()
            for why in reasons
            if why.startswith("instance ")
            for name in [why.split()[1]]
        }
        for log in sorted((home / "logs").glob("*/*.log")):
            if log.stem in running or now - log.stat().st_mtime < retention.logs_for:
                continue
            result.logs.append(f"{log.parent.name}/{log.name}")
            result.freed += _size(log) + (
                _size(log.with_suffix(".json")) if log.with_suffix(".json").exists() else 0
            )
            if not dry_run:
                log.unlink(missing_ok=True)
                log.with_suffix(".json").unlink(missing_ok=True)
        for name, volume in sorted(project.stack.volume.items()):
            if not dry_run:
                result.snapshots += [
                    f"{name} of release {r}" for r in prune_snapshots(home, name, volume.snapshots_keep)
                ]
    state.close()
    return result
