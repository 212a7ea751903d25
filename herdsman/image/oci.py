"""The local OCI image layout (`.herd/images`): content-addressed blobs plus an index of images.

This is the standard layout (oci-layout, index.json, blobs/sha256/...), written by herdsman itself,
so any OCI tool (skopeo, crane, newer Docker engines) can read it. Blobs are immutable and written
atomically (temp file + rename); index.json is the only file ever rewritten, also atomically.
Raw bytes are kept exactly as received: a manifest or config is never re-serialised once stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from herdsman.errors import BakeError

OCI_LAYOUT_VERSION = "1.0.0"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_PULLED = "dev.herdsman.pulled"  # in the index: fetched by `herd pull` (listed by `herd images`)
GZIP_MEDIA_TYPES = frozenset({MEDIA_LAYER_GZIP, DOCKER_LAYER_GZIP})


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same object always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
        )


def _check_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise BakeError(f"not a sha256 digest: {digest!r}")
    return hexpart


class ImageStore:
    """An OCI image layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        layout = root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        if not (root / "index.json").exists():
            self._write_index([])

    # blobs -----------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / _check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BakeError(
                f"blob {digest} is missing from the image store {self.root}",
                hint="bake again (`herd bake`) to rebuild it",
            ) from None

    def read_json(self, digest: str) -> dict[str, Any]:
        value = json.loads(self.read_blob(digest))
        if not isinstance(value, dict):
            raise BakeError(f"blob {digest} is not a JSON object")
        return value

    def write_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
            os.chmod(path, 0o444)  # blobs are immutable, like ingested ones
        return Descriptor(media_type, digest, len(data))

    def write_json(self, value: Any, media_type: str) -> Descriptor:
        return self.write_blob(canonical_json(value), media_type)

    def ingest(self, source: Path, media_type: str, digest: str | None = None) -> Descriptor:
        """Move a finished temp file into the store under its digest (computed when not given)."""
        if digest is None:
            digest = file_digest(source)
        size = source.stat().st_size
        path = self.blob_path(digest)
        if path.exists():
            source.unlink()
        else:
            os.replace(source, path)
            os.chmod(path, 0o444)
        return Descriptor(media_type, digest, size)

    def copy_in(self, stream: IO[bytes], media_type: str, expected: str | None = None) -> Descriptor:
        """Copy a stream into the store, verifying its digest when one is expected."""
        with self.temp_file() as (tmp, handle):
            hasher = hashlib.sha256()
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
                handle.write(chunk)
            handle.close()
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise BakeError(f"blob digest mismatch: expected {expected}, got {digest}")
            return self.ingest(tmp, media_type, digest)

    def temp_file(self) -> _TempFile:
        return _TempFile(self.root / "tmp")

    # manifests and index -----------------------------------------------------------------------
    def manifest(self, digest: str) -> dict[str, Any]:
        return self.read_json(digest)

    def config(self, manifest_digest: str) -> dict[str, Any]:
        manifest = self.manifest(manifest_digest)
        return self.read_json(manifest["config"]["digest"])

    def index(self) -> list[Descriptor]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise BakeError(f"cannot read {self.root / 'index.json'}: {exc}") from None
        return [Descriptor.from_json(m) for m in data.get("manifests", [])]

    def add_to_index(self, descriptor: Descriptor) -> None:
        """Record an image (a manifest descriptor with annotations). An equal entry is not duplicated;
        an entry with the same ref name is replaced (the name moves, the old image stays stored)."""
        name = descriptor.annotations.get(REF_NAME)
        kept = [
            d
            for d in self.index()
            if d != descriptor and (name is None or d.annotations.get(REF_NAME) != name)
        ]
        self._write_index([*kept, descriptor])

    def remove_from_index(self, digests: set[str]) -> None:
        """Forget these images (their blobs stay until a prune sweeps what nothing names)."""
        self._write_index([d for d in self.index() if d.digest not in digests])

    def _write_index(self, manifests: list[Descriptor]) -> None:
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [m.to_json() for m in manifests]}
        _atomic_write(self.root / "index.json", canonical_json(index))

    def find(self, ref: str) -> Descriptor:
        """An image by full digest, digest prefix (at least 7 hex digits) or ref name."""
        candidates = self.index()
        for d in candidates:
            if ref in (d.digest, d.annotations.get(REF_NAME)):
                return d
        short = ref.removeprefix("sha256:")
        if len(short) >= 7:
            found = [d for d in candidates if d.digest.removeprefix("sha256:").startswith(short)]
            if len({d.digest for d in found}) == 1:
                return found[0]
        raise BakeError(f"no image {ref!r} in {self.root}", hint="`herd images` lists the baked images")


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


class _TempFile:
    """A temp file inside the store (same file system, so ingest is a rename), removed on error."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def __enter__(self) -> tuple[Path, BinaryIO]:
        fd, name = tempfile.mkstemp(dir=self.directory, prefix="blob-")
        self.path = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        return self.path, self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def iter_blobs(store: ImageStore) -> Iterator[Path]:
    yield from sorted(store.blobs.iterdir())


def copy_blob(store: ImageStore, digest: str, dest: Path) -> None:
    shutil.copyfile(store.blob_path(digest), dest)
