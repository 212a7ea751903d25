"""The `copy` layer: project files into the image, honouring .herdignore / .dockerignore.

A copy layer is keyed by what it would contain (paths, modes, content digests, link targets), not
by file times, so a touched-but-unchanged file does not rebuild it and two checkouts in different
directories produce the same layer. Hashing every file on every bake would make a no-op bake slow
on big trees, so content digests are remembered per (path, size, mtime, inode) in a stat cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from herdsman.errors import BakeError
from herdsman.image.tarball import Entry

IGNORE_FILES = (".herdignore", ".dockerignore")
# Never copied: herdsman's own state, VCS data, virtualenvs and Python caches.
ALWAYS_IGNORED_NAMES = frozenset({".herd", ".git", ".venv", "__pycache__"})
ALWAYS_IGNORED_AT_ROOT = frozenset({"herd.lock"})


@dataclass(frozen=True)
class SourceFile:
    """One file or directory to copy: its image path and what identifies its content."""

    image_path: str
    kind: str  # "dir", "file" or "symlink"
    executable: bool
    digest: str  # content digest for files, target for symlinks, "" for dirs
    source: Path


def ignore_patterns(src: Path) -> list[str]:
    """Patterns (Docker's .dockerignore syntax) from the first of .herdignore / .dockerignore in ``src``."""
    patterns: list[str] = []
    for name in IGNORE_FILES:
        file = src / name
        if file.is_file():
            for line in file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    patterns.append(line)
            break
    return patterns


class StatCache:
    """Content digests remembered by (size, mtime_ns, inode, ctime_ns); saved as one JSON file."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.changed = False
        try:
            self.entries: dict[str, list[object]] = json.loads(file.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def digest(self, path: Path, info: os.stat_result) -> str:
        key = str(path)
        stamp: list[object] = [info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns]
        known = self.entries.get(key)
        if known is not None and known[:4] == stamp:
            return str(known[4])
        with path.open("rb") as handle:
            digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
        self.entries[key] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.file)
            self.changed = False


def scan(root: Path, src: str, dest: str, cache: StatCache) -> list[SourceFile]:
    """Every file under ``root/src`` that is not ignored, mapped under ``dest``, sorted.

    As Docker's COPY: a directory ``src`` puts its *contents* into ``dest``; a file ``src`` goes
    into ``dest`` when it ends with "/" (``app.py`` to ``/app/`` is ``/app/app.py``), and otherwise
    ``dest`` is the file's new path (``app.py`` to ``/app/main.py`` is ``/app/main.py``)."""
    base = (root / src).resolve()
    if not base.exists():
        raise BakeError(f"copy source {src!r} does not exist in {root}", hint="fix image.copy in herd.toml")
    if root.resolve() not in (base, *base.parents):
        raise BakeError(f"copy source {src!r} is outside the project {root}")
    dest_path = dest.strip("/")
    out: list[SourceFile] = []
    if base.is_file():  # as Docker's COPY: into a directory when dest ends with "/", else renamed
        info = base.stat()
        name = "/".join(filter(None, [dest_path, base.name])) if dest.endswith("/") else dest_path
        return [SourceFile(name, "file", bool(info.st_mode & 0o111), cache.digest(base, info), base)]
    for rel in _walk(base):
        path = base / rel
        image_path = f"{dest_path}/{rel}" if dest_path else rel
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            out.append(SourceFile(image_path, "symlink", False, os.readlink(path), path))
        elif stat.S_ISDIR(info.st_mode):
            out.append(SourceFile(image_path, "dir", False, "", path))
        elif stat.S_ISREG(info.st_mode):
            out.append(
                SourceFile(image_path, "file", bool(info.st_mode & 0o111), cache.digest(path, info), path)
            )
        else:
            raise BakeError(
                f"{path} is neither a file, a directory nor a symlink",
                hint="add it to .herdignore (sockets, fifos and devices cannot go into an image)",
            )
    if dest_path:
        out.append(SourceFile(dest_path, "dir", False, "", base))
    out.sort(key=lambda f: f.image_path)
    return out


def _always_ignored(rel: str) -> bool:
    parts = rel.split("/")
    return (
        any(part in ALWAYS_IGNORED_NAMES for part in parts)
        or rel.endswith(".pyc")
        or rel in ALWAYS_IGNORED_AT_ROOT
    )


def _walk(base: Path) -> list[str]:
    """Relative paths under ``base`` that are not ignored. Docker's own matcher (from the docker SDK)
    reads ignore files, so they mean exactly what they mean to `docker build`; it is imported only
    when there is such a file, because importing the SDK costs more than a no-op bake."""
    patterns = ignore_patterns(base)
    if patterns:
        from docker.utils.build import PatternMatcher

        found = list(PatternMatcher(patterns).walk(str(base)))
    else:
        found = []
        for directory, dirs, files in os.walk(base):
            rel_dir = os.path.relpath(directory, base)
            prefix = "" if rel_dir == "." else rel_dir + "/"
            dirs[:] = [d for d in dirs if d not in ALWAYS_IGNORED_NAMES]
            found += [prefix + name for name in dirs + files]
    return [rel for rel in found if not _always_ignored(rel)]


def layer_key(files: list[SourceFile]) -> list[list[object]]:
    """The cache-key material of a copy layer: exactly what ends up in the tar."""
    return [[f.image_path, f.kind, f.executable, f.digest] for f in files]


def layer_entries(files: list[SourceFile]) -> list[Entry]:
    entries: list[Entry] = []
    for f in files:
        if f.kind == "file":
            entries.append(Entry(f.image_path, "file", f.executable, source=f.source))
        elif f.kind == "symlink":
            entries.append(Entry(f.image_path, "symlink", target=f.digest))
        else:
            entries.append(Entry(f.image_path, "dir"))
    return entries
