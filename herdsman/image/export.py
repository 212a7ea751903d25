"""Export one image from the local store as a single tar: an OCI layout, or one `docker load` reads.

Why a tar and not the store itself: users hand images to tools that know nothing of herdsman
(`docker load`, skopeo, crane, `ctr import`), and those want one self-contained file. Both formats
hold the same OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) with the manifest,
config and layers byte for byte as stored, so the image keeps its digest. "docker" adds a
``manifest.json`` for Docker's classic loader (20.10 ignores index.json).

Docker 20.10 needs nothing more (checked against engine 20.10.24): no ``repositories`` file, and
the gzip layer blobs can stay compressed, since ``docker load`` decompresses them itself and checks
each against the config's diff_ids. The loaded image's ID is the sha256 of our config bytes. Its
RepoTags must be a lower-case repository with a tag (``hello/web:abc123def456``), checked here
first so a bad tag fails with a clear error instead of half-way through ``docker load``.

The archive is reproducible (members sorted, mtime 0, uid/gid 0, no owner names, 0644 files and
0755 directories, no PAX records), written to a temp file beside the output and renamed into place,
and blobs are streamed, each verified against its digest on the way, so a damaged store cannot
produce an archive that lies about its content.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from herdsman.errors import BakeError
from herdsman.image.oci import (
    DOCKER_MANIFEST,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    OCI_LAYOUT_VERSION,
    REF_NAME,
    Descriptor,
    ImageStore,
    canonical_json,
    sha256_digest,
)

FORMATS = ("docker", "oci")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")


@dataclass(frozen=True)
class _Member:
    name: str
    data: bytes | None = None  # small JSON files
    blob: Descriptor | None = None  # or a blob streamed from the store


def export_image(
    store: ImageStore, manifest_digest: str, output: Path, *, fmt: str = "docker", tag: str | None = None
) -> None:
    """Write the image ``manifest_digest`` to ``output`` as an "oci" or "docker" archive."""
    if fmt not in FORMATS:
        raise BakeError(f"unknown export format {fmt!r}", hint="use 'docker' or 'oci'")
    if tag is not None and fmt == "docker":
        check_docker_tag(tag)
    raw = store.read_blob(manifest_digest)
    if sha256_digest(raw) != manifest_digest:
        raise BakeError(f"manifest {manifest_digest} in {store.root} is damaged", hint=_REBAKE)
    manifest = json.loads(raw)
    media_type = manifest.get("mediaType") or MEDIA_MANIFEST
    if media_type not in (MEDIA_MANIFEST, DOCKER_MANIFEST) or "config" not in manifest:
        raise BakeError(
            f"{manifest_digest} is not a single-platform image manifest ({media_type})",
            hint="export an image that `herd images` lists",
        )
    config = Descriptor.from_json(manifest["config"])
    layers = [Descriptor.from_json(layer) for layer in manifest.get("layers", [])]
    for what, descriptor in [("config", config), *(("layer", layer) for layer in layers)]:
        _check_blob(store, manifest_digest, what, descriptor)

    image = Descriptor(media_type, manifest_digest, len(raw), {REF_NAME: tag} if tag else {})
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [image.to_json()]}
    members = [
        _Member("oci-layout", canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})),
        _Member("index.json", canonical_json(index)),
        _Member(_blob_name(manifest_digest), raw),
    ]
    blobs = {d.digest: d for d in [config, *layers] if d.digest != manifest_digest}
    members += [_Member(_blob_name(digest), blob=blobs[digest]) for digest in blobs]
    if fmt == "docker":
        entry: dict[str, object] = {"Config": _blob_name(config.digest)}
        if tag:
            entry["RepoTags"] = [tag]
        entry["Layers"] = [_blob_name(layer.digest) for layer in layers]
        members.append(_Member("manifest.json", canonical_json([entry])))
    _write_atomically(store, output, sorted(members, key=lambda m: m.name))


def check_docker_tag(tag: str) -> None:
    """Refuse a tag `docker load` would reject: it needs ``[host[:port]/]lower/case/repo:tag``."""
    name, sep, version = tag.rpartition(":")
    parts = name.split("/")
    if parts and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost") and len(parts) > 1:
        parts = parts[1:]  # a registry host, which may hold upper case letters and a port
    if not sep or "/" in version or not _TAG.match(version) or not all(_COMPONENT.match(p) for p in parts):
        raise BakeError(
            f"{tag!r} is not a tag Docker accepts",
            hint="use a lower-case repository and a tag, such as hello/web:abc123def456",
        )


_REBAKE = "bake the image again (`herd bake`) to restore the image store"


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _check_blob(store: ImageStore, image: str, what: str, descriptor: Descriptor) -> None:
    path = store.blob_path(descriptor.digest)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BakeError(
            f"the {what} blob {descriptor.digest} of image {image} is missing from {store.root}", hint=_REBAKE
        ) from None
    if size != descriptor.size:
        raise BakeError(
            f"the {what} blob {descriptor.digest} is {size} bytes, its manifest says {descriptor.size}",
            hint=_REBAKE,
        )


class _Verifying:
    """A blob's file, read through a hash so a damaged blob is caught while it is streamed."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.hash = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self.handle.read(size)
        self.hash.update(data)
        return data


def _tarinfo(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    return info


def _write_tar(store: ImageStore, handle: BinaryIO, members: list[_Member]) -> None:
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo("blobs/", 0, directory=True))  # "blobs/..." sorts before every file
        tar.addfile(_tarinfo("blobs/sha256/", 0, directory=True))
        for member in members:
            if member.data is not None:
                tar.addfile(_tarinfo(member.name, len(member.data)), io.BytesIO(member.data))
                continue
            assert member.blob is not None
            with store.blob_path(member.blob.digest).open("rb") as blob:
                reader = _Verifying(blob)
                tar.addfile(_tarinfo(member.name, member.blob.size), reader)
            if "sha256:" + reader.hash.hexdigest() != member.blob.digest:
                raise BakeError(f"blob {member.blob.digest} in {store.root} is damaged", hint=_REBAKE)


def _write_atomically(store: ImageStore, output: Path, members: list[_Member]) -> None:
    if output.is_dir():
        raise BakeError(f"{output} is a directory", hint="give the archive's file name, e.g. -o image.tar")
    try:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:
        raise BakeError(
            f"cannot write {output}: {exc.strerror or exc}",
            hint="write into an existing directory you may write to",
        ) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_tar(store, handle, members)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except OSError as exc:
        raise BakeError(
            f"cannot write {output}: {exc.strerror or exc}", hint="check free space and permissions"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
