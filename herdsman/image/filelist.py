"""The per-file digest list of an unpacked image, recorded at unpack time, for drift detection.

An unpacked root file system (`.herd/rootfs/DIGEST`) is read-only to instances, but not to
whoever has a shell on the host. `herd verify` re-hashes it against the list recorded when it
was unpacked, beside it (`.herd/rootfs/DIGEST.files.json`, never inside, where an instance could
see it), written before the rootfs is renamed into place: a rootfs never exists without its list.

The list maps each relative path to [type, mode, size, sha256] for a file, [type, mode] for a
directory, [type, target] for a symlink. Comparing always hashes content (a forged mtime must not
hide a change); sizes that differ skip the hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERSION = 1
_CHUNK = 1 << 20

Entry = list[Any]
Listing = dict[str, Entry]


@dataclass(frozen=True)
class Difference:
    path: str  # relative to the root, "/"-separated
    kind: str  # modified | added | removed | mode | type | symlink
    detail: str = ""


def list_path(rootfs: Path) -> Path:
    return rootfs.with_name(rootfs.name + ".files.json")


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path, info: os.stat_result, *, content: bool = True) -> Entry:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return ["l", os.readlink(path)]
    if stat.S_ISDIR(info.st_mode):
        return ["d", mode]
    if stat.S_ISREG(info.st_mode):
        return ["f", mode, info.st_size, _hash(path) if content else ""]
    return ["?", mode]


def _walk(root: Path) -> dict[str, tuple[Path, os.stat_result]]:
    found: dict[str, tuple[Path, os.stat_result]] = {}
    for directory, dirs, files in os.walk(root):  # never follows symlinks to directories
        base = Path(directory)
        for name in dirs + files:
            path = base / name
            try:
                found[path.relative_to(root).as_posix()] = (path, path.lstat())
            except OSError:
                continue
    return found


def record(root: Path) -> Listing:
    return {rel: _entry(path, info) for rel, (path, info) in sorted(_walk(root).items())}


def write(rootfs: Path, listing: Listing, *, late: bool = False) -> None:
    """Write the list of ``rootfs`` beside it, atomically."""
    target = list_path(rootfs)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # unpacks may race
    body = {"version": VERSION, "recorded": "late" if late else "at unpack", "entries": listing}
    tmp.write_text(json.dumps(body, separators=(",", ":"), sort_keys=True))
    os.replace(tmp, target)


def read(rootfs: Path) -> tuple[Listing, str]:
    """The recorded list and when it was recorded; an older unpacked image gets one now ("late":
    it can only show changes made from now on)."""
    path = list_path(rootfs)
    if not path.exists():
        write(rootfs, record(rootfs), late=True)
    body = json.loads(path.read_text())
    return dict(body["entries"]), str(body.get("recorded", ""))


def compare(root: Path, listing: Listing) -> list[Difference]:
    """What differs between the tree at ``root`` and its recorded list."""
    now = _walk(root)
    out: list[Difference] = []
    for rel in sorted(set(listing) | set(now)):
        was = listing.get(rel)
        if rel not in now:
            out.append(Difference(rel, "removed"))
            continue
        path, info = now[rel]
        if was is None:
            out.append(Difference(rel, "added"))
            continue
        quick = _entry(path, info, content=False)
        if quick[0] != was[0]:
            out.append(Difference(rel, "type", f"{was[0]} -> {quick[0]}"))
        elif quick[0] == "l":
            if quick[1] != was[1]:
                out.append(Difference(rel, "symlink", f"{was[1]} -> {quick[1]}"))
        elif quick[0] == "f" and (quick[2] != was[2] or _hash(path) != was[3]):
            out.append(Difference(rel, "modified", f"{was[2]} -> {quick[2]} bytes"))
        elif quick[1] != was[1]:
            out.append(Difference(rel, "mode", f"{was[1]:o} -> {quick[1]:o}"))
    return out


def copy_differences(root: Path | None, differences: list[Difference], dest: Path) -> None:
    """Keep the evidence: the changed and added files (symlinks as symlinks, nothing followed out
    of the root) under ``dest``, and `differences.json` listing every difference (only the list
    when there is no ``root`` to copy from)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in differences:
        if root is None:
            break
        if item.kind not in ("modified", "added", "type", "symlink", "mode"):
            continue
        source = root / item.path
        target = dest / "files" / item.path
        try:
            info = source.lstat()
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
            elif stat.S_ISREG(info.st_mode):
                shutil.copyfile(source, target, follow_symlinks=False)
        except OSError:
            continue
    (dest / "differences.json").write_text(json.dumps([asdict(d) for d in differences], indent=1))
