"""Base images: where an image starts, before herdsman adds its own layers.

Each provider turns the `base` string of a recipe into a `BaseImage` stored in the local OCI
layout, and says what herd.lock must pin so that the next bake starts from the same bytes:

    scratch                 nothing at all
    host                    nothing either; instances run on the host OS (the process driver)
    oci:PATH[#REF]          an OCI image layout directory (one image, or the one named REF)
    docker-archive:PATH[#REPO:TAG]   a `docker save` tarball
    debian:SUITE            a Debian root file system built by mmdebstrap, plus `packages`
    REGISTRY/NAME@sha256:.. an image from an OCI registry, by digest (or :TAG, pinned in herd.lock)

A provider receives the pin from herd.lock (or None) and `refresh`: with a pin and no refresh it
must give exactly the pinned base or fail with a BakeError that says to run `herd bake --refresh`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdsman.errors import BakeError
from herdsman.image.oci import Descriptor, ImageStore
from herdsman.image.progress import Reporter
from herdsman.image.registry import looks_like_registry


@dataclass(frozen=True)
class BaseImage:
    """A base as the baker needs it. ``config`` is the base's parsed image config (empty for
    scratch/host); its layers are already in the store; ``pin`` is what herd.lock records."""

    name: str
    layers: tuple[Descriptor, ...] = ()
    diff_ids: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # the base's manifest digest in the store, "" for scratch and host
    pin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseRequest:
    """Everything a provider may look at."""

    name: str  # the `base` string as written
    packages: tuple[str, ...]
    root: Path  # the project directory; relative paths are resolved from here
    store: ImageStore
    pinned: dict[str, Any] | None  # this base's entry in herd.lock, if any
    refresh: bool
    reporter: Reporter


def resolve_base(request: BaseRequest) -> BaseImage:
    kind, _, rest = request.name.partition(":")
    if request.name in ("scratch", "host"):
        return BaseImage(name=request.name, pin={"name": request.name})
    if kind == "oci":
        from herdsman.image.bases.oci_dir import resolve_oci_dir

        return resolve_oci_dir(request, rest)
    if kind == "docker-archive":
        from herdsman.image.bases.docker_archive import resolve_docker_archive

        return resolve_docker_archive(request, rest)
    if looks_like_registry(request.name):
        from herdsman.image.bases.registry import resolve_registry

        return resolve_registry(request)
    if kind == "debian":
        from herdsman.image.bases.debian import resolve_debian

        return resolve_debian(request, rest)
    raise BakeError(f"unknown base {request.name!r}", hint="see `herd init` for the bases herdsman knows")
