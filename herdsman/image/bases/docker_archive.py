"""Base images from a `docker save` tarball (`base = "docker-archive:PATH"` or `"...#REPO:TAG"`).

The archive's config is stored raw (its digest is the image ID Docker shows). Its layers are
stored as they are — uncompressed tars, whose digest is their diff_id, or gzip if the engine wrote
them so — and a new OCI manifest is written for them: a docker-archive has no manifest of its own.
Members are streamed from the tar, never read whole into memory. The layers are checked by the
unpacking rules (`unpack.check_layers`) before the image is recorded: a hostile archive is refused
with one line naming it, the layer and the member, and nothing is baked from it.
"""

from __future__ import annotations

import json
import tarfile
from typing import IO, Any

from herdsman.errors import BakeError
from herdsman.image.bases import BaseImage, BaseRequest
from herdsman.image.oci import (
    MEDIA_CONFIG,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR,
    MEDIA_MANIFEST,
    REF_NAME,
    Descriptor,
)
from herdsman.image.unpack import check_layers


def _member(tar: tarfile.TarFile, name: str, archive: str) -> IO[bytes]:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise BakeError(f"{archive} has no member {name!r}", hint="is it a `docker save` archive?")
    return handle


def _pick(entries: list[dict[str, Any]], tag: str, archive: str) -> dict[str, Any]:
    if tag:
        for entry in entries:
            if tag in (entry.get("RepoTags") or []):
                return entry
        tags = [t for e in entries for t in (e.get("RepoTags") or [])]
        raise BakeError(
            f"no image tagged {tag!r} in {archive}", hint=f"it holds: {', '.join(tags) or 'no tags'}"
        )
    if len(entries) != 1:
        raise BakeError(f"{archive} holds {len(entries)} images; say which with docker-archive:PATH#REPO:TAG")
    return entries[0]


def resolve_docker_archive(request: BaseRequest, rest: str) -> BaseImage:
    path_text, _, tag = rest.partition("#")
    path = (request.root / path_text).resolve()
    store = request.store
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the `with tar` below
    except (OSError, tarfile.TarError) as exc:
        raise BakeError(f"cannot open the docker archive {path}: {exc}") from None
    with tar:
        entries = json.load(_member(tar, "manifest.json", str(path)))
        entry = _pick(list(entries), tag, str(path))
        config_name = str(entry["Config"])
        config_desc = store.copy_in(_member(tar, config_name, str(path)), MEDIA_CONFIG)
        config = store.read_json(config_desc.digest)
        pinned = (request.pinned or {}).get("config")
        if pinned and not request.refresh and pinned != config_desc.digest:
            raise BakeError(
                f"the base {request.name} is now image {config_desc.digest[:19]}, "
                f"but herd.lock pinned {pinned[:19]}",
                hint="run `herd bake --refresh` to accept the new base",
            )
        diff_ids = tuple(config.get("rootfs", {}).get("diff_ids") or [])
        names = list(entry.get("Layers") or [])
        if len(names) != len(diff_ids):
            raise BakeError(f"{path}: {len(names)} layers but {len(diff_ids)} diff_ids in the config")
        layers = []
        with request.reporter.task(
            f"importing {len(names)} layer(s) from {path.name}", total=len(names)
        ) as task:
            for name, diff_id in zip(names, diff_ids, strict=True):
                handle = _member(tar, name, str(path))
                magic = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
                media_type = MEDIA_LAYER_GZIP if magic == b"\x1f\x8b" else MEDIA_LAYER_TAR
                expected = diff_id if media_type == MEDIA_LAYER_TAR else None
                layers.append(store.copy_in(handle, media_type, expected=expected))
                task.advance()
    with request.reporter.task(f"checking the base {request.name}"):
        check_layers(store, layers, request.name)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    stored = store.write_json(manifest, MEDIA_MANIFEST)
    ref = f"base/docker-archive:{path.name}{'#' + tag if tag else ''}"
    store.add_to_index(Descriptor(MEDIA_MANIFEST, stored.digest, stored.size, {REF_NAME: ref}))
    return BaseImage(
        name=request.name,
        layers=tuple(layers),
        diff_ids=diff_ids,
        config=config,
        digest=stored.digest,
        pin={"name": request.name, "digest": stored.digest, "config": config_desc.digest},
    )
