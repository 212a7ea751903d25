"""Volume data outside every instance: snapshots before a migration, restores, backups.

A volume is a directory on this machine — `.herd/volumes/NAME` for the process driver, the named
volume's mount point for the docker driver (the driver says where: `volume_dir`). Snapshots live
in `.herd/snapshots/RELEASE/VOLUME`: a consistent copy, file by file, cloned (reflink, FICLONE)
where the file system can, else copied. Not hard links: an app that writes a file in place would
write through the link into the snapshot.

A restore makes the volume byte for byte its snapshot or backup again (modes, times and owners
included). It is staged: the copy is made and verified in a directory *beside* the volume (same
file system) while the instances keep serving from the old data, and only then put in place by
two renames (`swap_in`) — so the service is down for the swap and a start, not for the copy. A
volume directory that cannot be renamed (a mount point) gets the staged copy's content instead.
Backups are tar archives with a manifest of every file's sha256 (`herd volume backup`); restoring
one verifies every digest, of the archive and of the files extracted, and refuses a damaged
archive without touching the volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from herdsman.errors import DeployError

FICLONE = 0x40049409  # linux/fs.h: clone a whole file (reflink)
MANIFEST = ".herd-backup.json"


def _clone_or_copy(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError:
            pass
        shutil.copyfileobj(src, dst, 1 << 20)


def copy_tree(source: Path, target: Path) -> None:
    """Copy the contents of ``source`` into the existing directory ``target``: files, symlinks and
    directories, with modes, times and (as root) owners.

    The source may be live (a snapshot is taken while the serving release writes): an entry that
    vanishes between the listing and its copy (an app's temporary file, renamed over its target
    meanwhile) was never data of a consistent state, and is skipped, not an error."""
    as_root = os.geteuid() == 0
    for directory, dirs, files in os.walk(source):
        base = Path(directory)
        into = target / base.relative_to(source)
        for name in sorted(dirs) + sorted(files):
            with contextlib.suppress(FileNotFoundError):
                _copy_entry(base / name, into / name, as_root)
    _copy_times(source, target)


def _copy_entry(src: Path, dst: Path, as_root: bool) -> None:
    info = src.lstat()
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(info.st_mode):
        dst.mkdir()
    elif stat.S_ISREG(info.st_mode):
        _clone_or_copy(src, dst)
    else:
        return  # sockets, FIFOs: not data
    if as_root:
        os.chown(dst, info.st_uid, info.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(dst, stat.S_IMODE(info.st_mode))


def _copy_times(source: Path, target: Path) -> None:
    """Times last, deepest first (creating entries changes their directory's mtime)."""
    entries = sorted(
        (Path(d) / n for d, dirs, files in os.walk(source) for n in dirs + files),
        key=lambda p: -len(p.parts),
    )
    for src in [*entries, source]:
        dst = target / src.relative_to(source)
        with contextlib.suppress(OSError, NotImplementedError):
            info = src.lstat()
            os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def tree_digest(directory: Path) -> str:
    """One digest of a tree's paths, types, modes and contents (what "byte for byte" means here)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{info.st_mode:o}\0".encode())
        if stat.S_ISREG(info.st_mode):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        elif stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(path).encode())
    return "sha256:" + digest.hexdigest()


def snapshot_dir(home: Path, release: int, volume: str) -> Path:
    return home / "snapshots" / str(release) / volume


def snapshot(volume_dir: Path, dest: Path) -> Path:
    """A consistent copy of a volume at ``dest`` (written beside it, then renamed into place)."""
    if dest.exists():
        shutil.rmtree(dest)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    volume_dir.mkdir(parents=True, exist_ok=True)
    copy_tree(volume_dir, partial)
    os.chmod(partial, stat.S_IMODE(volume_dir.stat().st_mode))
    os.rename(partial, dest)
    return dest


def restore(snapshot_path: Path, volume_dir: Path) -> None:
    """Make the volume exactly its snapshot again."""
    if not snapshot_path.is_dir():
        raise DeployError(f"no snapshot at {snapshot_path}", hint="`herd volume snapshots` lists them")
    volume_dir.mkdir(parents=True, exist_ok=True)
    empty(volume_dir)
    copy_tree(snapshot_path, volume_dir)


def prune_snapshots(home: Path, volume: str, keep: int) -> list[int]:
    """Keep the snapshots of ``volume`` of the newest ``keep`` releases; returns the pruned ones."""
    root = home / "snapshots"
    releases = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    mine = [r for r in releases if (root / str(r) / volume).is_dir()]
    old = mine[: max(0, len(mine) - keep)]
    for release in old:
        shutil.rmtree(root / str(release) / volume)
        with contextlib.suppress(OSError):
            (root / str(release)).rmdir()  # when it was the last volume of that release
    return old


def backup(volume_dir: Path, archive: Path, volume: str) -> int:
    """Write a tar of the volume with a manifest of every file's sha256; returns the file count."""
    files: dict[str, str] = {}
    for path in sorted(volume_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            files[path.relative_to(volume_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = json.dumps({"volume": volume, "created": time.time(), "files": files}, indent=1).encode()
    partial = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(partial, "w") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for path in sorted(volume_dir.iterdir()):
            tar.add(path, arcname=path.name)
    os.replace(partial, archive)
    return len(files)


def verify_backup(archive: Path) -> dict[str, str]:
    """Every file of a backup against its manifest; a clear error for anything amiss."""
    hint = "the archive is damaged or not a herd volume backup; nothing was changed"
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            expected: dict[str, str] = json.loads(member.read())["files"]
            seen = {}
            for info in tar:
                if info.isfile() and info.name != MANIFEST:
                    data = tar.extractfile(info)
                    assert data is not None
                    seen[info.name] = hashlib.sha256(data.read()).hexdigest()
    except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
        raise DeployError(f"{archive} is not a readable backup ({exc})", hint=hint) from None
    bad = sorted(name for name in set(expected) | set(seen) if expected.get(name) != seen.get(name))
    if bad:
        raise DeployError(f"{archive} is corrupt: {', '.join(bad[:5])} do not match the manifest", hint=hint)
    return expected


def fill_from_backup(archive: Path, directory: Path) -> int:
    """Make ``directory`` hold exactly a verified backup (every extracted file is checked against
    the manifest too); returns the file count. Used on a staging directory by a restore."""
    files = verify_backup(archive)
    directory.mkdir(parents=True, exist_ok=True)
    empty(directory)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name != MANIFEST]
        tar.extractall(directory, members=members, filter="data")
    written = {
        path.relative_to(directory).as_posix(): _file_digest(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }
    if written != files:
        bad = sorted(n for n in set(written) | set(files) if written.get(n) != files.get(n))
        raise DeployError(
            f"the copy of {archive} does not match its manifest: {', '.join(bad[:5])}",
            hint="the disk may be full or failing; the volume was not changed",
        )
    return len(files)


restore_backup = fill_from_backup  # the name callers knew


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def staging_dir(volume_dir: Path) -> Path:
    """Where a restore prepares the new data: beside the volume, on the same file system (for a
    Docker volume, inside the volume's own directory, beside its `_data`)."""
    return volume_dir.with_name(f".{volume_dir.name}.restoring")


def stage(fill: Callable[[Path], object], volume_dir: Path) -> Path:
    """A fresh staging directory beside ``volume_dir``, filled by ``fill``, with the volume
    directory's own mode and owner (it will take its place). Nothing of the volume changes."""
    staged = staging_dir(volume_dir)
    shutil.rmtree(staged, ignore_errors=True)
    volume_dir.mkdir(parents=True, exist_ok=True)
    staged.mkdir()
    try:
        fill(staged)
        info = volume_dir.stat()
        os.chmod(staged, stat.S_IMODE(info.st_mode))
        if os.geteuid() == 0:
            os.chown(staged, info.st_uid, info.st_gid)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def swap_in(staged: Path, volume_dir: Path) -> Path | None:
    """Put the staged copy in the volume's place (no instance may be using it): the volume moves
    aside, the copy moves in — two renames. Returns where the old data went (for the caller to
    delete once the service runs again), or None when the volume directory could not be renamed
    (a mount point: its content is replaced by the staged copy's instead, a local copy)."""
    old = volume_dir.with_name(f".{volume_dir.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(volume_dir, old)
    except OSError:
        empty(volume_dir)
        copy_tree(staged, volume_dir)
        shutil.rmtree(staged, ignore_errors=True)
        return None
    try:
        os.rename(staged, volume_dir)
    except OSError:
        os.rename(old, volume_dir)  # put the old data back: the volume is never left missing
        raise
    return old
