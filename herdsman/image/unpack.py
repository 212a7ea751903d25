"""Unpack an image from the local store into a root file system directory, safely; and the same
rules as a check, for a base image entering the store.

Layers are untrusted input (a registry, a colleague's tarball), and ``tarfile.extractall`` follows
symlinks planted by earlier members or layers, creates device nodes and knows nothing of OCI whiteouts.
So each member is extracted by hand, by these rules (this module is their one place):

- a member's name must be relative, without a ``..`` component, without NUL, at most 4096 bytes long
  with no component over 255 bytes; anything else is refused;
- symlinks are kept as written, and their targets are resolved *as a chroot would*: an absolute
  target means the image root, and ``..`` at the root stays at the root. So ``lib -> /usr/lib`` or
  ``x -> ../../../usr/share/x`` work, and a later member written through them lands inside the image;
  only more than 40 links in a row are refused. herdsman never follows a link of an unpacked image on
  the host (parents are resolved by hand, files are opened with ``O_NOFOLLOW``);
- hard links must name a file already extracted (inside the image, by the same rules); device nodes
  and FIFOs are refused;
- ``.wh.NAME`` and ``.wh..wh..opq`` whiteouts hide lower layers' content.

An image is unpacked beside its destination, each blob checked against its digest as it is read, then
renamed into place: a directory named by an image digest is always complete, and its per-file digest
list (`filelist`, for drift detection) is written beside it first.

`check_layers` applies the same rules when a base image enters the store (`herd bake` of an ``oci:``
or ``docker-archive:`` base, `herd pull`): its layers are unpacked into a scratch directory that is
then removed, so a hostile archive is refused with one line before any image is baked from it, rather
than at a deploy after it was exported or pushed. A sequence of layers that passed is remembered
(by their digests) so the next bake does not check it again.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from herdsman.errors import BakeError
from herdsman.image import filelist
from herdsman.image.oci import GZIP_MEDIA_TYPES, MEDIA_LAYER_TAR, Descriptor, ImageStore, sha256_digest

MAX_SYMLINKS = 40
MAX_PATH = 4096  # bytes in a member's name or a link's target (Linux PATH_MAX)
MAX_COMPONENT = 255  # bytes in one component of a name (Linux NAME_MAX)
SHOWN = 80  # characters of a name shown in an error: a hostile one may be megabytes long
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_SPECIAL = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}
_HINT = "the image is damaged or hostile; herdsman never writes outside the directory it unpacks into"
_BASE_HINT = "the image is damaged or hostile; it was refused before anything was baked from it"
RULES_VERSION = 2  # part of what a passed check is remembered by: stricter rules check bases again


def unpack_image(store: ImageStore, manifest_digest: str, dest: Path) -> None:
    """Apply every layer of an image, in order, into ``dest``: all or nothing. An existing ``dest`` is
    kept as it is: it is named by the image digest, and an unpacked image never changes."""
    if os.path.lexists(dest):
        return
    if sha256_digest(store.read_blob(manifest_digest)) != manifest_digest:
        raise BakeError(f"manifest {manifest_digest} does not match its digest", hint="bake again")
    try:
        descriptors = [Descriptor.from_json(layer) for layer in store.manifest(manifest_digest)["layers"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BakeError(f"{manifest_digest} is not an image manifest with layers ({exc!r})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        os.chmod(partial, 0o755)
        for layer in descriptors:
            unpack_layer(store.blob_path(layer.digest), layer.media_type, partial, digest=layer.digest)
        filelist.write(dest, filelist.record(partial))  # before the rootfs exists under its name
        try:
            os.rename(partial, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
            _remove_tree(partial)  # a concurrent unpack of the same image finished first
    except BaseException:
        _remove_tree(partial)
        raise


def unpack_layer(
    blob: Path, media_type: str, dest: Path, *, digest: str | None = None, label: str | None = None
) -> None:
    """Apply one layer (tar or tar+gzip) onto ``dest``, which may already hold the lower layers.

    With ``digest``, the blob is hashed while it is read and a mismatch is an error (raised once the
    whole blob is read: unpack into a scratch directory, as `unpack_image` does, to discard it).
    ``label`` names the layer in errors (default: "layer DIGEST").
    """
    name = label or f"layer {digest or blob.name}"
    if media_type not in GZIP_MEDIA_TYPES and media_type != MEDIA_LAYER_TAR:
        raise BakeError(f"{name} has an unsupported media type {media_type!r}")
    try:
        handle = blob.open("rb")
    except OSError as exc:
        raise BakeError(f"cannot read {name}: {exc}", hint="bake again (`herd bake`)") from None
    with handle:
        raw = _HashingReader(handle)
        stream = io.BufferedReader(raw, _CHUNK)
        failure: Exception | None = None
        try:
            mode: Literal["r|gz", "r|"] = "r|gz" if media_type in GZIP_MEDIA_TYPES else "r|"
            with tarfile.open(fileobj=stream, mode=mode) as tar:
                _Unpacker(dest, name).run(tar)
        except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError, OverflowError) as exc:
            failure = exc  # a damaged blob is reported as such, below, rather than as a bad archive
        try:
            while stream.read(_CHUNK):  # the rest of the blob (tar padding, gzip trailer) counts too
                pass
        except OSError as exc:
            raise BakeError(f"cannot read {name}: {exc}") from exc
    actual = "sha256:" + raw.hash.hexdigest()
    if digest is not None and actual != digest:
        raise BakeError(
            f"{name} is corrupt: its content hashes to {actual}",
            hint="remove the blob from the image store and bake again",
        ) from failure
    if failure is not None:
        raise BakeError(f"cannot unpack {name}: {_cut(str(failure), 200)}") from failure


class _HashingReader(io.RawIOBase):
    """Reads from ``source`` while hashing every byte read."""

    def __init__(self, source: io.BufferedReader) -> None:
        self.source = source
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.source.readinto(buffer)
        self.hash.update(buffer[:n])
        return n


class _Unpacker:
    """Extracts the members of one layer under ``root``; see the module docstring for the rules."""

    def __init__(self, root: Path, layer: str) -> None:
        self.root = root
        self.layer = layer
        self.member = ""
        self.as_root = os.geteuid() == 0
        self.seen: set[str] = set()  # paths written by this layer (whiteouts only apply below it)
        self.dirs: dict[Path, tarfile.TarInfo | int] = {}  # deferred: a directory's member, or old mode
        self.checked: set[Path] = set()

    def refuse(self, reason: str) -> BakeError:
        return BakeError(f"refusing {self.layer}: member {shown(self.member)} {reason}", hint=_HINT)

    def run(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.member = member.name
            self.apply(tar, member)
        # Directories last, deepest first: their modes may forbid writing, their mtimes must stick.
        for path, meta in sorted(self.dirs.items(), key=lambda item: -len(item[0].parts)):
            if (info := _lstat(path)) is None or not stat.S_ISDIR(info.st_mode):
                continue  # removed or replaced later in the layer
            if isinstance(meta, int):
                os.chmod(path, meta)
            else:
                self.set_meta(path, meta, is_link=False)

    def split(self, name: str) -> list[str]:
        self.check_name(name, "name")
        if name.startswith("/"):
            raise self.refuse("has an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse("has a '..' component")
        longest = max((_size(p) for p in parts), default=0)
        if longest > MAX_COMPONENT:
            raise self.refuse(f"has a name component of {longest} bytes (at most {MAX_COMPONENT})")
        return parts

    def check_name(self, name: str, what: str) -> None:
        if "\0" in name:
            raise self.refuse(f"has a NUL byte in its {what}")
        if _size(name) > MAX_PATH:
            raise self.refuse(f"has a {what} of {_size(name)} bytes (at most {MAX_PATH})")

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.split(member.name)
        if member.type in _SPECIAL:
            raise self.refuse(f"is a {_SPECIAL[member.type]}: device nodes are not allowed in images")
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            raise self.refuse(f"has an unsupported type {member.type!r}")
        if not parts:
            if not member.isdir():
                raise self.refuse("replaces the image root with something that is not a directory")
            self.dirs[self.root] = member
            return
        if parts[-1].startswith(WHITEOUT):
            self.whiteout(parts[:-1], parts[-1])
            return
        source = self.link_source(member.linkname) if member.islnk() else None
        parent = self.resolve(parts[:-1], create=True)
        assert parent is not None
        path = self.root.joinpath(*parent, parts[-1])
        self.writable(path.parent)
        existing = _lstat(path)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                self.clear(path)
                os.mkdir(path, 0o755)
            self.dirs[path] = member
        elif member.isreg():
            self.clear(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                contents = tar.extractfile(member)
                assert contents is not None
                shutil.copyfileobj(contents, out, _CHUNK)
            self.set_meta(path, member, is_link=False)
        elif member.issym():
            self.check_symlink(member.linkname)
            self.clear(path)
            os.symlink(member.linkname, path)
            self.set_meta(path, member, is_link=True)
        else:
            assert source is not None
            if source != path:
                self.clear(path)
                os.link(source, path, follow_symlinks=False)
            self.set_meta(path, member, is_link=stat.S_ISLNK(os.lstat(path).st_mode))
        self.seen.add("/".join([*parent, parts[-1]]))

    def resolve(self, parts: list[str], *, create: bool) -> list[str] | None:
        """The real directory (relative to the root, free of symlinks) that ``parts`` names, following
        image symlinks as if chrooted; missing directories are made when ``create``, else None."""
        resolved: list[str] = []
        pending = list(reversed(parts))
        links = 0
        missing = False
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:  # at the root, ".." is the root: as in a chroot
                    resolved.pop()
                continue
            here = self.root.joinpath(*resolved)
            self.writable(here)
            info = _lstat(here / part)
            if info is not None and stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise self.refuse("goes through too many levels of symbolic links")
                target = os.readlink(here / part)
                if target.startswith("/"):
                    resolved = []
                pending.extend(reversed(target.split("/")))
                continue
            if info is not None and not stat.S_ISDIR(info.st_mode):
                raise self.refuse(f"has a parent {'/'.join([*resolved, part])!r} that is not a directory")
            missing = missing or info is None
            resolved.append(part)
        if missing and not create:
            return None
        for depth in range(1, len(resolved) + 1):
            path = self.root.joinpath(*resolved[:depth])
            if not os.path.lexists(path):
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)
        return resolved

    def check_symlink(self, target: str) -> None:
        """Any target is meaningful inside the image only (resolved as in a chroot, never followed
        on the host), so only a target no file system could hold is refused."""
        if not target:
            raise self.refuse("is a symbolic link with an empty target")
        self.check_name(target, "link target")

    def link_source(self, linkname: str) -> Path:
        parts = self.split(linkname)  # a hard link's target by the rules of a name: no "/x", no ".."
        parent = self.resolve(parts[:-1], create=False) if parts else None
        source = None if parent is None else self.root.joinpath(*parent, parts[-1])
        info = None if source is None else _lstat(source)
        if source is None or info is None or stat.S_ISDIR(info.st_mode):
            raise self.refuse(f"is a hard link to {shown(linkname)}, which is not an extracted file")
        return source

    def whiteout(self, parent_parts: list[str], leaf: str) -> None:
        name = leaf[len(WHITEOUT) :]
        if leaf != OPAQUE and name in ("", ".", ".."):
            raise self.refuse("is a whiteout that names no file")
        parent = self.resolve(parent_parts, create=False)
        if parent is None:
            return
        if leaf == OPAQUE:
            self.empty(self.root.joinpath(*parent), "/".join(parent))
        elif not leaf.startswith(WHITEOUT + WHITEOUT) and "/".join([*parent, name]) not in self.seen:
            self.clear(self.root.joinpath(*parent, name))  # other .wh..wh.* (aufs metadata) are skipped

    def empty(self, directory: Path, rel: str) -> None:
        """Remove everything under ``directory`` that this layer did not write itself."""
        self.writable(directory)
        for name in sorted(os.listdir(directory)):
            child_rel = f"{rel}/{name}" if rel else name
            child = directory / name
            if child_rel not in self.seen:
                self.clear(child)
            elif stat.S_ISDIR(os.lstat(child).st_mode):
                self.empty(child, child_rel)

    def clear(self, path: Path) -> None:
        """Remove whatever is at ``path`` (a directory with its contents), never following a link."""
        info = _lstat(path)
        if info is None:
            return
        self.writable(path.parent)
        if stat.S_ISDIR(info.st_mode):
            _remove_tree(path, strict=True)
        else:
            os.unlink(path)

    def writable(self, directory: Path) -> None:
        """Unprivileged, a lower layer's read-only directory is opened up until this layer ends."""
        if self.as_root or directory in self.checked or (info := _lstat(directory)) is None:
            return
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o700 != 0o700:
            os.chmod(directory, mode | 0o700)
            self.dirs.setdefault(directory, mode)
        self.checked.add(directory)

    def set_meta(self, path: Path, member: tarfile.TarInfo, *, is_link: bool) -> None:
        if self.as_root:
            os.lchown(path, member.uid, member.gid)
        if not is_link:
            os.chmod(path, member.mode & 0o7777)
        elif os.chmod in os.supports_follow_symlinks:
            os.chmod(path, member.mode & 0o7777, follow_symlinks=False)
        if not is_link or os.utime in os.supports_follow_symlinks:
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def check_layers(store: ImageStore, layers: Sequence[Descriptor], origin: str) -> None:
    """Refuse a base whose layers could not be unpacked safely, naming ``origin`` (the archive or
    reference), the layer, the member and why, in one line. Run before the base is recorded in the
    store's index, so nothing is baked from it; see the module docstring."""
    chain = [f"rules:{RULES_VERSION}", *(layer.digest for layer in layers)]
    key = hashlib.sha256("\n".join(chain).encode()).hexdigest()
    marker = store.root.parent / "cache" / "checked" / key
    if not layers or marker.exists():
        return
    scratch = Path(tempfile.mkdtemp(prefix=".check-", dir=store.root.parent))
    try:
        for index, layer in enumerate(layers, 1):
            label = f"{origin}, layer {index} of {len(layers)}"
            blob = store.blob_path(layer.digest)
            unpack_layer(blob, layer.media_type, scratch, digest=layer.digest, label=label)
    except BakeError as exc:
        raise BakeError(exc.message, hint=_BASE_HINT) from None
    finally:
        _remove_tree(scratch)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(origin + "\n")


def shown(name: str) -> str:
    """A name as an error shows it: quoted, and cut when long."""
    return repr(_cut(name, SHOWN))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _size(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove_tree(path: Path, *, strict: bool = False) -> None:
    """rmtree that copes with read-only directories when unprivileged; never follows a symlink."""
    try:
        if os.geteuid() != 0 and not os.path.islink(path):
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o700)
            for top, dirnames, _ in os.walk(path):  # top-down: a directory is opened before it is listed
                for name in dirnames:
                    sub = os.path.join(top, name)
                    if not os.path.islink(sub):
                        os.chmod(sub, stat.S_IMODE(os.lstat(sub).st_mode) | 0o700)
    except OSError:
        if strict:
            raise
    shutil.rmtree(path, ignore_errors=not strict)
