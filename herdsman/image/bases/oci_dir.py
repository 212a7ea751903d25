"""Base images from an OCI image layout directory (`base = "oci:PATH"` or `"oci:PATH#REF"`).

The base's manifest, config and layers are copied into the store byte for byte, each verified
against its digest while copied: a base's manifest or config is never re-serialised, so its digest
is the one its publisher computed. A multi-platform index resolves to this machine's platform.
Its layers are checked by the unpacking rules (`unpack.check_layers`) before it is recorded in the
store's index: a hostile layer is refused here, not baked into an image that could be exported.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from herdsman.errors import BakeError
from herdsman.image.bases import BaseImage, BaseRequest
from herdsman.image.oci import (
    DOCKER_MANIFEST_LIST,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    REF_NAME,
    Descriptor,
    ImageStore,
)
from herdsman.image.unpack import check_layers

INDEX_TYPES = frozenset({MEDIA_INDEX, DOCKER_MANIFEST_LIST})


def machine_platform() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BakeError(f"cannot read {path}: {exc}", hint="is this an OCI image layout directory?") from None


def _pick(entries: list[dict[str, Any]], ref: str, where: str) -> dict[str, Any]:
    if ref:
        for entry in entries:
            if ref in (entry.get("digest"), (entry.get("annotations") or {}).get(REF_NAME)):
                return entry
        names = [str((e.get("annotations") or {}).get(REF_NAME, e.get("digest"))) for e in entries]
        raise BakeError(f"no image {ref!r} in {where}", hint=f"it holds: {', '.join(names) or 'nothing'}")
    if len(entries) != 1:
        raise BakeError(
            f"{where} holds {len(entries)} images; say which one with oci:PATH#REF",
            hint="REF is an org.opencontainers.image.ref.name annotation or a digest",
        )
    return entries[0]


def _copy_blob(layout: Path, store: ImageStore, digest: str, media_type: str) -> Descriptor:
    source = layout / "blobs" / digest.replace(":", "/", 1)
    try:
        with source.open("rb") as handle:
            return store.copy_in(handle, media_type, expected=digest)
    except FileNotFoundError:
        raise BakeError(f"blob {digest} is missing from {layout}") from None


def resolve_oci_dir(request: BaseRequest, rest: str) -> BaseImage:
    path_text, _, ref = rest.partition("#")
    layout = (request.root / path_text).resolve()
    index = _read_json(layout / "index.json")
    entry = _pick(list(index.get("manifests") or []), ref, str(layout))
    while entry.get("mediaType") in INDEX_TYPES:  # a multi-platform index: this machine's platform
        nested = _copy_blob(layout, request.store, entry["digest"], entry["mediaType"])
        children = json.loads(request.store.read_blob(nested.digest)).get("manifests") or []
        wanted = [c for c in children if (c.get("platform") or {}).get("architecture") == machine_platform()]
        if not wanted:
            raise BakeError(f"{layout} has no image for linux/{machine_platform()}")
        entry = wanted[0]
    digest = str(entry["digest"])
    pinned = (request.pinned or {}).get("digest")
    if pinned and not request.refresh and pinned != digest:
        raise BakeError(
            f"the base {request.name} is now {digest[:19]}, but herd.lock pinned {pinned[:19]}",
            hint="run `herd bake --refresh` to accept the new base",
        )
    manifest_desc = _copy_blob(layout, request.store, digest, str(entry.get("mediaType") or MEDIA_MANIFEST))
    manifest = request.store.read_json(manifest_desc.digest)
    config_desc = Descriptor.from_json(manifest["config"])
    _copy_blob(layout, request.store, config_desc.digest, config_desc.media_type)
    layers = tuple(Descriptor.from_json(layer) for layer in manifest.get("layers") or [])
    with request.reporter.task(f"copying {len(layers)} base layer(s)", total=len(layers)) as task:
        for layer in layers:
            _copy_blob(layout, request.store, layer.digest, layer.media_type)
            task.advance()
    config = request.store.read_json(config_desc.digest)
    diff_ids = tuple(config.get("rootfs", {}).get("diff_ids") or [])
    if len(diff_ids) != len(layers):
        raise BakeError(f"the base {request.name} has {len(layers)} layers but {len(diff_ids)} diff_ids")
    with request.reporter.task(f"checking the base {request.name}"):
        check_layers(request.store, layers, request.name)
    annotations = {REF_NAME: f"base/oci:{Path(path_text).name}{'#' + ref if ref else ''}"}
    request.store.add_to_index(Descriptor(manifest_desc.media_type, digest, manifest_desc.size, annotations))
    return BaseImage(
        name=request.name,
        layers=layers,
        diff_ids=diff_ids,
        config=config,
        digest=digest,
        pin={"name": request.name, "digest": digest},
    )
