"""`herd volume`: the data that lives outside every instance — list, snapshots, backup, restore."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import human_size
from herdsman.cli.ui import console

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


@volume.command(name="ls")
@ENV_OPTION
@pass_context
def ls(ctx: Context, env: str | None) -> None:
    """List the declared volumes."""
    from herdsman.facade.data import volumes

    table = Table(box=None, pad_edge=False)
    for column in ("volume", "data", "size", "snapshots", "description"):
        table.add_column(column)
    for row in volumes(ctx.project(), env, driver_name=ctx.driver):
        snapshots = f"{row.snapshots} (keep {row.keep})"
        table.add_row(row.name, str(row.data), human_size(row.size), snapshots, row.description)
    console.print(table)


@volume.command(name="snapshots")
@click.argument("name", required=False)
@pass_context
def snapshots(ctx: Context, name: str | None) -> None:
    """The snapshots taken before each migration (.herd/snapshots/RELEASE/VOLUME)."""
    from herdsman.facade.data import snapshots as taken

    found = taken(ctx.project(), name)
    if not found:
        console.print("no snapshot (one is taken of each volume a migration can write, before it runs)")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("release", "volume", "size", "path"):
        table.add_column(column)
    for snapshot in found:
        table.add_row(str(snapshot.release), snapshot.volume, human_size(snapshot.size), str(snapshot.path))
    console.print(table)


@volume.command(name="backup")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@ENV_OPTION
@pass_context
def backup_command(ctx: Context, name: str, file: Path, env: str | None) -> None:
    """Write volume NAME to FILE: a tar with a manifest of every file's sha256."""
    from herdsman.facade.data import backup_volume

    count = backup_volume(ctx.project(), name, file, env, driver_name=ctx.driver)
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
    from herdsman.facade.data import check_backup, declared_volume, restore_volume

    project = ctx.project()
    declared_volume(project, name)
    count = check_backup(file)
    console.print(f"{file}: {count} file(s), every digest checks out")
    if not yes:
        click.confirm(f"replace the data of volume {name}? The services using it stop meanwhile", abort=True)
    services = restore_volume(
        project,
        name,
        file,
        env,
        driver_name=ctx.driver,
        on_progress=lambda line: console.print(f"[dim]·[/] {line}", highlight=False),
    )
    console.print(f"volume {name} restored from {file}; {', '.join(services) or 'no service'} replaced")
