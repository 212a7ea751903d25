"""Bit-for-bit reproducible layer tarballs.

Pitfalls this module exists to avoid (the ones ko, Jib, apko and Nix's dockerTools met):
- tarfile writes a PAX ``mtime`` record for float mtimes: every mtime here is an int.
- entries come sorted by path, with every parent directory emitted explicitly before its children;
- uid/gid are 0 and user/group names empty; modes are normalised (0755 dirs and executables, 0644 files);
- gzip: one writer only, ``GzipFile(filename="", mtime=0, compresslevel=N)`` with N explicit, because
  ``gzip.compress`` and ``GzipFile`` disagree on the OS byte. Compressed bytes still depend on the zlib
  build, so layers are cached by their uncompressed digest (diff_id) and the compressor is recorded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from herdsman.image.oci import MEDIA_LAYER_GZIP, Descriptor, ImageStore

GZIP_LEVEL = 6
COMPRESSOR = f"gzip;level={GZIP_LEVEL};zlib={zlib.ZLIB_RUNTIME_VERSION}"

Kind = Literal["dir", "file", "symlink"]


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment (the reproducible-builds convention), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0").strip()
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class Entry:
    """One member of a layer. ``path`` is relative to the image root, POSIX, without a leading slash."""

    path: str
    kind: Kind
    executable: bool = False
    source: Path | None = None  # file contents come from here...
    data: bytes | None = None  # ...or from here
    target: str = ""  # symlink target


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor  # the compressed blob
    diff_id: str  # sha256 of the uncompressed tar


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by path, each preceded by every parent directory (declared or not)."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = normalise(entry.path)
        by_path[path] = Entry(path, entry.kind, entry.executable, entry.source, entry.data, entry.target)
        for parent in PurePosixPath(path).parents:
            name = str(parent)
            if name != "." and name not in by_path:
                by_path[name] = Entry(name, "dir")
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def normalise(path: str) -> str:
    pure = PurePosixPath("/" + path.lstrip("/"))
    parts = [p for p in pure.parts[1:] if p not in ("", ".")]
    if ".." in parts or not parts:
        raise ValueError(f"bad layer path {path!r}")
    return "/".join(parts)


class _HashingWriter(io.RawIOBase):
    """Passes bytes through to ``sink`` while hashing them."""

    def __init__(self, sink: BinaryIO | gzip.GzipFile) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)


def _tarinfo(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode = 0o777
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if entry.executable else 0o644
    return info


def write_layer(
    store: ImageStore,
    entries: Iterable[Entry],
    *,
    mtime: int | None = None,
    level: int = GZIP_LEVEL,
    on_bytes: Callable[[int], None] | None = None,
) -> Layer:
    """Write a gzip-compressed, reproducible tar layer into the store."""
    stamp = source_date_epoch() if mtime is None else mtime
    with store.temp_file() as (tmp, handle):
        compressed = _HashingWriter(handle)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=level) as gz:
            raw = _HashingWriter(gz)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in with_parents(entries):
                    info = _tarinfo(entry, stamp)
                    if entry.kind != "file":
                        tar.addfile(info)
                    elif entry.data is not None:
                        info.size = len(entry.data)
                        tar.addfile(info, io.BytesIO(entry.data))
                    else:
                        assert entry.source is not None
                        with entry.source.open("rb") as src:
                            info.size = os.fstat(src.fileno()).st_size
                            tar.addfile(info, src)
                    if on_bytes is not None:
                        on_bytes(info.size)
        handle.close()
        digest = "sha256:" + compressed.hash.hexdigest()
        descriptor = store.ingest(tmp, MEDIA_LAYER_GZIP, digest)
    return Layer(descriptor, "sha256:" + raw.hash.hexdigest())


def compress_tar(
    store: ImageStore, source: Path, *, level: int = GZIP_LEVEL, on_bytes: Callable[[int], None] | None = None
) -> Layer:
    """Gzip an existing (already reproducible) tar, such as mmdebstrap's output, into a layer blob."""
    with store.temp_file() as (tmp, handle):
        compressed = _HashingWriter(handle)
        raw_hash = hashlib.sha256()
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=level) as gz,
            source.open("rb") as src,
        ):
            while chunk := src.read(1 << 20):
                raw_hash.update(chunk)
                gz.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        handle.close()
        descriptor = store.ingest(tmp, MEDIA_LAYER_GZIP, "sha256:" + compressed.hash.hexdigest())
    return Layer(descriptor, "sha256:" + raw_hash.hexdigest())
