"""`herd volume`: the data that lives outside every instance — list, snapshots, backup, restore."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import human_size
from herdsman.cli.ui import console

if TYPE_CHECKING:
    from herdsman.spec import Project

ENV_OPTION = click.option("-e", "--env", "env", help="The environment (default: [stack] environment).")


@click.group()
def volume() -> None:
    """Named volumes: data that survives every replacement.

    \b
    herd volume ls                     volumes, where their data lives, size, snapshots
    herd volume snapshots [NAME]       the snapshots taken before migrations
    herd volume backup NAME FILE       a tar of the volume with a digest of every file
    herd volume restore NAME FILE      verify a backup, then put it back (instances are replaced)
    """


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _snapshots(home: Path) -> list[tuple[int, str, Path]]:
    root = home / "snapshots"
    if not root.is_dir():
        return []
    return sorted(
        (int(r.name), v.name, v)
        for r in root.iterdir()
        if r.name.isdigit()
        for v in r.iterdir()
        if v.is_dir()
    )


@volume.command(name="ls")
@ENV_OPTION
@pass_context
def ls(ctx: Context, env: str | None) -> None:
    """List the declared volumes."""
    from herdsman.deploy.run import Deployment

    deployment = Deployment(ctx.project(), env, driver_name=ctx.driver)
    snapshots = _snapshots(deployment.home)
    table = Table(box=None, pad_edge=False)
    for column in ("volume", "data", "size", "snapshots", "description"):
        table.add_column(column)
    for name, spec in sorted(deployment.project.stack.volume.items()):
        where = deployment.driver.volume_dir(deployment.project.stack_id, name)
        count = sum(1 for _, v, _ in snapshots if v == name)
        table.add_row(
            name,
            str(where),
            human_size(_size(where)),
            f"{count} (keep {spec.snapshots_keep})",
            spec.description,
        )
    console.print(table)


@volume.command(name="snapshots")
@click.argument("name", required=False)
@pass_context
def snapshots(ctx: Context, name: str | None) -> None:
    """The snapshots taken before each migration (.herd/snapshots/RELEASE/VOLUME)."""
    from herdsman.spec import herd_home

    found = [s for s in _snapshots(herd_home(ctx.project())) if name is None or s[1] == name]
    if not found:
        console.print("no snapshot (one is taken of each volume a migration can write, before it runs)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("release", "volume", "size", "path"):
        table.add_column(column)
    for release, volume_name, path in found:
        table.add_row(str(release), volume_name, human_size(_size(path)), str(path))
    console.print(table)


def _declared(ctx: Context, name: str) -> Project:
    from herdsman.errors import HerdError

    project = ctx.project()
    if name not in project.stack.volume:
        raise HerdError(
            f"no volume {name!r} in {project.file}",
            hint=f"declared: {', '.join(sorted(project.stack.volume)) or 'none'}",
        )
    return project


@volume.command(name="backup")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@ENV_OPTION
@pass_context
def backup_command(ctx: Context, name: str, file: Path, env: str | None) -> None:
    """Write volume NAME to FILE: a tar with a manifest of every file's sha256."""
    from herdsman.deploy.run import Deployment
    from herdsman.deploy.volumes import backup

    deployment = Deployment(_declared(ctx, name), env, driver_name=ctx.driver)
    directory = deployment.driver.volume_dir(deployment.project.stack_id, name)
    count = backup(directory, file, name)
    console.print(f"wrote {file}: {count} file(s) of volume {name}, each with its digest")


@volume.command(name="restore")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@ENV_OPTION
@click.option("-y", "--yes", is_flag=True, help="Do not ask before replacing the volume's data.")
@pass_context
def restore_command(ctx: Context, name: str, file: Path, env: str | None, yes: bool) -> None:
    """Put a backup back into volume NAME.

    Every file is checked against the backup's manifest first: a damaged archive is refused and
    nothing changes. The backup is then copied beside the volume and checked again while the
    service keeps running; only then are the instances using the volume stopped (out of the
    router's pool, drained), the copy renamed into place and the current release started again:
    a restore never writes under running instances, and they are down for the swap, not the copy.
    """
    from herdsman.deploy.data import restore_locked
    from herdsman.deploy.volumes import restore_backup, verify_backup

    project = _declared(ctx, name)
    files = verify_backup(file)
    console.print(f"{file}: {len(files)} file(s), every digest checks out")
    if not yes:
        click.confirm(f"replace the data of volume {name}? The services using it stop meanwhile", abort=True)
    from herdsman.deploy.run import Deployment

    deployment = Deployment.open(project, env, driver_name=ctx.driver)

    async def run() -> list[str]:
        with deployment.locked(wait=60):  # a running agent lists again before it heals
            return await restore_locked(deployment, {name: functools.partial(restore_backup, file)})

    with deployment.executor.listening(lambda line: console.print(f"[dim]·[/] {line}", highlight=False)):
        services = asyncio.run(run())
    console.print(f"volume {name} restored from {file}; {', '.join(services) or 'no service'} replaced")
