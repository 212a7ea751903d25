"""`herd bake`, kept apart and light: when only source files changed it bakes from the prepared
recipes of the last bake (see image/assemble.py) without loading the spec models or rich."""

from __future__ import annotations

import sys
import time

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import columns, human_size


@click.command(name="bake")
@click.argument("services", nargs=-1)
@click.option("--refresh", is_flag=True, help="Resolve bases and requirements anew and rewrite herd.lock.")
@pass_context
def bake_command(ctx: Context, services: tuple[str, ...], refresh: bool) -> None:
    """Bake the images of SERVICES (default: all) into .herd/images.

    Layers are reused when their inputs are unchanged; unpinned inputs (a base tag, a requirements
    file) are resolved once and pinned in herd.lock, which every later bake follows.
    """
    from herdsman.facade.images import bake, quick_bake

    started = time.monotonic()
    results = None if refresh else quick_bake(ctx.file, services)
    if results is None:
        from herdsman.cli.ui import RichReporter

        project = ctx.project()
        with RichReporter() as reporter:
            results = bake(project, services, refresh=refresh, reporter=reporter)
    rows = [["service", "image", "size", "layers"]]
    for result in results:
        layers = f"{len(result.built)} built, {len(result.reused)} cached"
        rows.append([result.service, result.image.digest[:19], human_size(result.size), layers])
    click.echo(columns(rows))
    click.echo(
        f"baked {len(results)} image(s) in {time.monotonic() - started:.2f}s", err=not sys.stdout.isatty()
    )
