"""`herd volume`: the data that lives outside every instance — list, snapshots, backup, restore."""

from __future__ import annotations

from pathlib import Path

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import human_size
from herdsman.cli.out import console, rich_table

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

    table = rich_table()
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
    table = rich_table()
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


@click.command()
@click.option("--dry-run", is_flag=True, help="Only say what would go, and why everything else stays.")
@pass_context
def prune(ctx: Context, dry_run: bool) -> None:
    """Delete what piles up: old images, unpacked root file systems, old logs and snapshots.

    Never what a retained release ([retention] releases = 10 per environment, the current one,
    failed ones for failed_for = 7d), a running or quarantined instance, the newest bake of a
    service, or a base or pulled image needs; never a blob younger than grace = 3m (a bake in
    progress). It holds every environment's deploy lock; a prune killed midway leaves the store
    consistent (the next one finishes the sweep).
    """
    from herdsman.facade.data import prune as sweep

    done = sweep(ctx.project(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for digest, reasons in sorted(done.kept.items()):
            console.print(f"keep {digest[:19]}: {'; '.join(reasons)}", highlight=False)
    for image in done.images:
        console.print(f"{verb} image {image}", highlight=False)
    for path in done.rootfs:
        console.print(f"{verb} unpacked image .herd/rootfs/{path}", highlight=False)
    for log in done.logs:
        console.print(f"{verb} log {log}", highlight=False)
    for snapshot in done.snapshots:
        console.print(f"{verb} snapshot {snapshot}", highlight=False)
    console.print(
        f"{verb} {len(done.images)} image(s), {done.blobs} blob(s), {len(done.rootfs)} unpacked image(s), "
        f"{len(done.logs)} log(s), {len(done.snapshots)} snapshot(s): {human_size(done.freed)} "
        f"{'to free' if dry_run else 'freed'}; kept {len(done.kept)} image(s)",
        highlight=False,
    )
