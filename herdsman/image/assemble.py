"""The second half of a bake: copy layers, image config and manifest, from a prepared recipe.

Baking has two halves. Preparing reads herd.toml and herd.lock, resolves the base and the
requirements layer, and fixes the image config; it needs the validated spec. Assembling scans the
project's files, writes (or finds in the cache) the copy layers, and writes config and manifest;
it needs only the prepared recipe, a plain JSON document. The prepared recipes of the last bake are
kept in `.herd/cache/prepared.json`, keyed by everything they were made from (herd.toml, herd.lock,
SOURCE_DATE_EPOCH, the herdsman version), so that a bake in which only source files changed — the
common case — assembles straight away, without even loading the spec.

The git revision is provenance, not content: it is kept in the release record and in the image's
*index* entry (what `herd images` shows), never in the image's bytes, so a commit that changes no
baked file (docs, tests) bakes the same digest and deploys as a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from herdsman import __version__
from herdsman.image import sources
from herdsman.image.cache import LayerCache, layer_key, stat_cache_file
from herdsman.image.oci import MEDIA_CONFIG, MEDIA_MANIFEST, REF_NAME, Descriptor, ImageStore
from herdsman.image.progress import NullReporter, Reporter
from herdsman.image.tarball import Layer, source_date_epoch, write_layer

ANNOTATION_SERVICE = "dev.herdsman.service"
ANNOTATION_STACK = "dev.herdsman.stack"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
PREPARED_FILE = "prepared.json"

Prepared = dict[str, Any]


@dataclass(frozen=True)
class BakeResult:
    service: str
    image: Descriptor  # the manifest, with its index annotations
    size: int  # config + layers, compressed
    built: tuple[str, ...] = ()  # layers written by this bake
    reused: tuple[str, ...] = field(default_factory=tuple)  # layers found in the cache


def created(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_revision(root: Path) -> str:
    """The commit the project is at ("" outside git): recorded in the release and the index entry, so
    a release and an image say where they came from (never in the image's bytes)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def prepared_key(stack_file: Path, lock_file: Path, epoch: int) -> str:
    """Everything a prepared recipe depends on, as one digest."""
    digest = hashlib.sha256()
    for part in (stack_file.read_bytes(), lock_file.read_bytes() if lock_file.exists() else b""):
        digest.update(hashlib.sha256(part).digest())
    digest.update(f"{epoch}\0{__version__}\0{stack_file.resolve()}".encode())
    return digest.hexdigest()


def assemble(
    store: ImageStore,
    root: Path,
    prepared: Prepared,
    *,
    epoch: int,
    stat_cache: sources.StatCache,
    reporter: Reporter,
    revision: str = "",
) -> BakeResult:
    """Add the copy layers to a prepared recipe and store the image (``revision``, the git commit, goes
    into its index entry only)."""
    cache = LayerCache(store)
    layers = [Layer(Descriptor.from_json(d), diff_id) for d, diff_id in prepared["layers"]]
    history = list(prepared["history"])
    built, reused = list(prepared["built"]), list(prepared["reused"])
    for src, dest in prepared["copy"]:
        files = sources.scan(root, src, dest, stat_cache)
        key = layer_key("copy", sources.layer_key(files), epoch)
        layer = cache.get(key)
        label = f"copy {src} -> {dest}"
        if layer is None:
            with reporter.task(f"writing the copy layer ({len(files)} entries)", total=len(files)) as task:
                layer = write_layer(
                    store, sources.layer_entries(files), mtime=epoch, on_bytes=lambda _: task.advance()
                )
            cache.put(key, layer)
            built.append(label)
        else:
            reused.append(label)
        layers.append(layer)
        history.append({"created": created(epoch), "created_by": f"herd: {label}"})
    config = dict(prepared["config"])
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    config["history"] = history
    config_blob = store.write_json(config, MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_blob.to_json(),
        "layers": [layer.descriptor.to_json() for layer in layers],
        "annotations": prepared["annotations"],
    }
    stored = store.write_json(manifest, MEDIA_MANIFEST)
    name, stack = prepared["service"], prepared["stack"]
    index_annotations = {
        REF_NAME: f"{stack}/{name}:{stored.digest[7:19]}",
        ANNOTATION_STACK: stack,
        ANNOTATION_SERVICE: name,
    }
    if revision:
        index_annotations[ANNOTATION_REVISION] = revision
    image = Descriptor(MEDIA_MANIFEST, stored.digest, stored.size, index_annotations)
    store.add_to_index(image)
    size = config_blob.size + sum(layer.descriptor.size for layer in layers)
    return BakeResult(name, image, size, tuple(built), tuple(reused))


def save_prepared(home: Path, key: str, prepared: list[Prepared]) -> None:
    path = home / "cache" / PREPARED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{PREPARED_FILE}.tmp")
    tmp.write_text(json.dumps({"key": key, "services": prepared}))
    os.replace(tmp, path)


def quick_bake(
    stack_file: Path, home: Path, services: tuple[str, ...] = (), reporter: Reporter | None = None
) -> list[BakeResult] | None:
    """Bake from the prepared recipes of the last bake, if herd.toml, herd.lock and the rest are
    unchanged and every base and requirements layer is still stored; None when a full bake is needed."""
    try:
        saved = json.loads((home / "cache" / PREPARED_FILE).read_text())
    except (OSError, ValueError):
        return None
    root = stack_file.parent
    epoch = source_date_epoch()
    if saved.get("key") != prepared_key(stack_file, root / "herd.lock", epoch):
        return None
    recipes = [p for p in saved["services"] if not services or p["service"] in services]
    if services and len(recipes) != len(set(services)):
        return None
    store = ImageStore(home / "images")
    if not all(store.has_blob(d["digest"]) for p in recipes for d, _ in p["layers"]):
        return None
    stat_cache = sources.StatCache(stat_cache_file(store))
    revision = git_revision(root)
    try:
        return [
            assemble(
                store,
                root,
                p,
                epoch=epoch,
                stat_cache=stat_cache,
                reporter=reporter or NullReporter(),
                revision=revision,
            )
            for p in recipes
        ]
    finally:
        stat_cache.save()
