"""Images for the faces: bake, check, the baked and pulled images, export, push and pull.

`herd bake` stays light: `quick_bake` bakes from the prepared recipes of the last bake without
loading the spec models (see `image.assemble`), so this module imports the image code only inside
its functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from herdsman.errors import HerdError

if TYPE_CHECKING:  # the spec models load only when a command needs them
    from herdsman.image.assemble import BakeResult as BakeResult  # re-exported: what the faces format
    from herdsman.image.oci import Descriptor, ImageStore
    from herdsman.image.progress import Reporter
    from herdsman.spec import Project


def quick_bake(file: Path | None, services: Sequence[str] = ()) -> list[BakeResult] | None:
    """A bake from the last bake's prepared recipes when only sources changed; None when a full
    bake (`bake`) is needed. ``file``: the herd.toml, or None for the nearest one upwards."""
    from herdsman.image.assemble import quick_bake as quick
    from herdsman.spec.files import find_stack_file, home_for

    stack_file = find_stack_file(file)
    return quick(stack_file, home_for(stack_file), tuple(services))


def bake(
    project: Project, services: Sequence[str] = (), *, refresh: bool = False, reporter: Reporter | None = None
) -> list[BakeResult]:
    """Bake SERVICES (all by default); layers whose inputs are unchanged are reused."""
    from herdsman.image.bake import bake as bake_images

    return bake_images(project, services, refresh=refresh, reporter=reporter)


def check(project: Project) -> None:
    """herd.lock is readable and matches the stack (herd.toml was checked when it was loaded)."""
    from herdsman.image.lock import Lock

    Lock.load(project.lock_file)


@dataclass(frozen=True)
class ImageRow:
    service: str  # or the reference a pulled image was fetched by
    digest: str
    size: int
    revision: str  # the source revision it was baked from, when known
    own: bool  # baked from this stack, or pulled into its store


def images(project: Project) -> list[ImageRow]:
    """Every image in the project's store, newest first."""
    from herdsman.image.assemble import ANNOTATION_REVISION, ANNOTATION_SERVICE, ANNOTATION_STACK
    from herdsman.image.bake import image_store
    from herdsman.image.oci import ANNOTATION_PULLED

    store = image_store(project)
    rows = []
    for entry in reversed(store.index()):
        annotations = entry.annotations
        manifest = store.manifest(entry.digest)
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        name = annotations.get(ANNOTATION_SERVICE) or annotations.get("org.opencontainers.image.ref.name", "")
        own = annotations.get(ANNOTATION_STACK) == project.stack.name or ANNOTATION_PULLED in annotations
        rows.append(ImageRow(name, entry.digest, size, annotations.get(ANNOTATION_REVISION, ""), own))
    return rows


def find_image(store: ImageStore, project: Project, ref: str) -> Descriptor:
    """An image by service name (its newest bake), digest, digest prefix or ref name."""
    from herdsman.image.assemble import ANNOTATION_SERVICE, ANNOTATION_STACK

    if ref in project.stack.service:
        for entry in reversed(store.index()):
            ann = entry.annotations
            if ann.get(ANNOTATION_SERVICE) == ref and ann.get(ANNOTATION_STACK) == project.stack.name:
                return entry
        raise HerdError(f"service {ref!r} has no baked image yet", hint=f"run `herd bake {ref}`")
    return store.find(ref)


def export(project: Project, ref: str, output: Path, *, fmt: str = "docker") -> str:
    """Write image ``ref`` as a `docker load` (or OCI layout) archive; returns the tag it carries."""
    from herdsman.image.assemble import ANNOTATION_SERVICE, ANNOTATION_STACK
    from herdsman.image.bake import image_store
    from herdsman.image.export import export_image

    store = image_store(project)
    descriptor = find_image(store, project, ref)
    stack = descriptor.annotations.get(ANNOTATION_STACK, project.stack.name)
    service = descriptor.annotations.get(ANNOTATION_SERVICE, "image")
    tag = f"{stack}/{service}:{descriptor.digest.removeprefix('sha256:')[:12]}"
    export_image(store, descriptor.digest, output, fmt=fmt, tag=tag)
    return tag


@dataclass(frozen=True)
class Pushed:
    reference: str  # REGISTRY/NAME@sha256:..., what to deploy or pull
    uploaded: int
    skipped: int  # blobs the registry already had
    release: int | None = None  # a service's image: the release of ``env`` it came from
    env: str = ""


def push(project: Project, ref: str, target: str, *, env: str | None = None) -> Pushed:
    """Send image ``ref`` to ``target`` (REGISTRY/NAME[:TAG]), byte for byte. A service name means
    the image its environment's current release runs (with no release yet, its newest bake)."""
    from herdsman.facade.stack import deployed_image
    from herdsman.image.bake import image_store
    from herdsman.image.registry import parse_reference
    from herdsman.image.registry import push as push_image

    store = image_store(project)
    deployed = deployed_image(project, env, ref) if ref in project.stack.service else None
    digest = deployed[0] if deployed is not None else find_image(store, project, ref).digest
    pushed = push_image(store, digest, parse_reference(target))
    release, where = (deployed[1], deployed[2]) if deployed is not None else (None, "")
    return Pushed(str(pushed.reference), pushed.uploaded, pushed.skipped, release, where)


@dataclass(frozen=True)
class Pulled:
    reference: str  # by digest
    resolved_from: str | None  # the tag it was looked up from, with --resolve
    manifest_size: int


def pull(project: Project, reference: str, *, resolve: bool = False) -> Pulled:
    """Fetch an image by digest into the project's store, every blob verified; a tag only with
    ``resolve`` (looked up once, and said)."""
    from herdsman.image.bake import image_store
    from herdsman.image.registry import parse_reference
    from herdsman.image.registry import pull as pull_image
    from herdsman.image.registry import resolve as resolve_tag

    ref = parse_reference(reference)
    resolved_from = None
    if ref.digest is None:
        if not resolve:
            raise HerdError(
                f"{reference} names a tag; pull by digest",
                hint="herd pull REGISTRY/NAME@sha256:..., or --resolve to look the tag up once",
            )
        ref, resolved_from = ref.by_digest(resolve_tag(ref)), reference
    descriptor = pull_image(image_store(project), ref, by="herd pull")
    return Pulled(str(ref), resolved_from, descriptor.size)
