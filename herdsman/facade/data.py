"""Volumes for the faces: where their data lives, their snapshots, backup and restore.

A restore holds the environment's deploy lock (a running agent lists again before it heals) and
replaces the instances using the volume; see `deploy.data.restore_locked`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from herdsman.errors import HerdError
from herdsman.spec import Project, herd_home

if TYPE_CHECKING:
    from herdsman.deploy.retention import Pruned as Pruned  # re-exported: what the faces format


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True, order=True)
class Snapshot:
    release: int  # the release whose migration it was taken before
    volume: str
    path: Path

    @property
    def size(self) -> int:
        return _size(self.path)


def snapshots(project: Project, volume: str | None = None) -> list[Snapshot]:
    """The snapshots taken before migrations (.herd/snapshots/RELEASE/VOLUME), oldest first."""
    root = herd_home(project) / "snapshots"
    if not root.is_dir():
        return []
    found = sorted(
        Snapshot(int(r.name), v.name, v)
        for r in root.iterdir()
        if r.name.isdigit()
        for v in r.iterdir()
        if v.is_dir()
    )
    return [s for s in found if volume is None or s.volume == volume]


@dataclass(frozen=True)
class VolumeRow:
    name: str
    data: Path  # where its files are, for the environment's driver
    size: int
    snapshots: int
    keep: int  # how many snapshots are kept
    description: str


def volumes(project: Project, env: str | None = None, *, driver_name: str | None = None) -> list[VolumeRow]:
    """`herd volume ls`: the declared volumes, by name."""
    from herdsman.deploy.run import Deployment

    deployment = Deployment(project, env, driver_name=driver_name)
    deployment.state.close()
    taken = snapshots(project)
    rows = []
    for name, spec in sorted(project.stack.volume.items()):
        where = deployment.driver.volume_dir(project.stack_id, name)
        count = sum(1 for s in taken if s.volume == name)
        rows.append(VolumeRow(name, where, _size(where), count, spec.snapshots_keep, spec.description))
    return rows


def declared_volume(project: Project, name: str) -> None:
    """A HerdError unless the stack declares volume ``name``."""
    if name not in project.stack.volume:
        raise HerdError(
            f"no volume {name!r} in {project.file}",
            hint=f"declared: {', '.join(sorted(project.stack.volume)) or 'none'}",
        )


def backup_volume(
    project: Project, name: str, file: Path, env: str | None = None, *, driver_name: str | None = None
) -> int:
    """Write volume ``name`` to ``file`` (a tar with a manifest of every file's sha256); returns
    how many files it holds."""
    from herdsman.deploy.run import Deployment
    from herdsman.deploy.volumes import backup

    declared_volume(project, name)
    deployment = Deployment(project, env, driver_name=driver_name)
    deployment.state.close()
    return backup(deployment.driver.volume_dir(project.stack_id, name), file, name)


def check_backup(file: Path) -> int:
    """Every file of a backup checked against its manifest; returns how many there are."""
    from herdsman.deploy.volumes import verify_backup

    return len(verify_backup(file))


def restore_volume(
    project: Project,
    name: str,
    file: Path,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Put backup ``file`` back into volume ``name``; returns the services whose instances were
    replaced. The backup is verified (again) and copied beside the volume before anything stops."""
    from herdsman.deploy.data import restore_locked
    from herdsman.deploy.run import Deployment
    from herdsman.deploy.volumes import restore_backup

    declared_volume(project, name)
    deployment = Deployment.open(project, env, driver_name=driver_name)

    async def run() -> list[str]:
        with deployment.locked(wait=60):  # a running agent lists again before it heals
            return await restore_locked(deployment, {name: functools.partial(restore_backup, file)})

    try:
        with deployment.executor.listening(on_progress):
            return asyncio.run(run())
    finally:
        deployment.state.close()


def prune(project: Project, *, dry_run: bool = False) -> Pruned:
    """`herd prune`: delete what no retained release, running or quarantined instance needs
    (`[retention]`); with ``dry_run``, only say what would go and why the rest stays."""
    import asyncio

    from herdsman.deploy.retention import prune as sweep

    return asyncio.run(sweep(project, dry_run=dry_run))
