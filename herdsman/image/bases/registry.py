"""Base images from an OCI registry: `base = "REGISTRY/NAME@sha256:..."` or `"REGISTRY/NAME:TAG"`.

Fetched like `herd pull`: by digest, every blob verified. A tag is resolved to a digest once and
pinned in herd.lock; later bakes fetch that digest until `herd bake --refresh` resolves the tag
again, so a tag moving on the registry never changes a bake silently.
"""

from __future__ import annotations

from herdsman.errors import BakeError
from herdsman.image.bases import BaseImage, BaseRequest
from herdsman.image.oci import Descriptor
from herdsman.image.registry import parse_reference, pull, resolve


def resolve_registry(request: BaseRequest) -> BaseImage:
    reference = parse_reference(request.name)
    pinned = (request.pinned or {}).get("digest")
    if reference.digest:
        digest = reference.digest
    elif pinned and not request.refresh:
        digest = str(pinned)
    else:
        with request.reporter.task(f"resolving {reference}"):
            digest = resolve(reference)
    if pinned and reference.digest and pinned != reference.digest and not request.refresh:
        raise BakeError(
            f"the base {request.name} names {reference.digest[:19]}, but herd.lock pinned {pinned[:19]}",
            hint="run `herd bake --refresh` to accept the new base",
        )
    with request.reporter.task(f"fetching {reference.by_digest(digest)}"):
        manifest_desc = pull(request.store, reference.by_digest(digest))
    manifest = request.store.manifest(manifest_desc.digest)
    config = request.store.read_json(manifest["config"]["digest"])
    layers = tuple(Descriptor.from_json(layer) for layer in manifest.get("layers") or [])
    diff_ids = tuple(config.get("rootfs", {}).get("diff_ids") or [])
    if len(diff_ids) != len(layers):
        raise BakeError(f"the base {request.name} has {len(layers)} layers but {len(diff_ids)} diff_ids")
    return BaseImage(
        name=request.name,
        layers=layers,
        diff_ids=diff_ids,
        config=config,
        digest=manifest_desc.digest,
        pin={"name": request.name, "digest": manifest_desc.digest},
    )
