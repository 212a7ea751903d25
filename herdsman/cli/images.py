"""Commands about the stack file and images: init, check, images, image export (bake: bake.py)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import human_size, short
from herdsman.cli.out import console, rich_table
from herdsman.errors import HerdError
from herdsman.spec import STACK_FILE
from herdsman.spec.starter import starter


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option("--name", help="The stack name (default: the directory's name).")
@click.option("--force", is_flag=True, help="Overwrite an existing herd.toml.")
def init(directory: Path, name: str | None, force: bool) -> None:
    """Write a commented starter herd.toml for a Python web app into DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / STACK_FILE
    if target.exists() and not force:
        raise HerdError(f"{target} already exists", hint="pass --force to overwrite it")
    stack_name = name or re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "app"
    if not re.match(r"^[a-z]", stack_name):
        stack_name = f"app-{stack_name}"
    target.write_text(starter(stack_name[:40]))
    console.print(f"wrote {target}: edit it, then run `herd check` and `herd bake`")


@click.command()
@click.option(
    "--for",
    "target",
    type=click.Choice(["kubernetes"]),
    help="Also warn about what has no equivalent there (what `herd export kubernetes` cannot carry over).",
)
@pass_context
def check(ctx: Context, target: str | None) -> None:
    """Validate herd.toml and herd.lock; exit non-zero and list every problem if one is wrong.

    Warnings (--for kubernetes) do not change the exit status.
    """
    from herdsman.facade import stack_warnings
    from herdsman.facade.images import check as check_lock

    project = ctx.project()
    check_lock(project)
    stack = project.stack
    for warning in stack_warnings(project):
        console.print("[yellow]warning[/]: ", end="", highlight=False)
        console.print(warning, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"[green]ok[/] {project.file}: stack {stack.name!r}, "
        f"{len(stack.service)} service(s), {len(stack.volume)} volume(s)"
    )
    if target == "kubernetes":
        from herdsman.cli.export import print_gaps
        from herdsman.facade.export import kubernetes_gaps

        gaps = kubernetes_gaps(project)
        print_gaps(gaps)
        console.print(f"{len(gaps)} warning(s) for kubernetes", highlight=False)


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also list images of other stacks and bases.")
@pass_context
def images(ctx: Context, show_all: bool) -> None:
    """List the baked images: service, digest, size and the revision they were baked from."""
    from herdsman.facade.images import images as stored

    table = rich_table()
    for column in ("service", "digest", "size", "revision"):
        table.add_column(column)
    for row in stored(ctx.project()):
        if show_all or row.own:
            table.add_row(row.service, short(row.digest), human_size(row.size), row.revision[:12])
    console.print(table)


@click.group()
def image() -> None:
    """Work with one baked image."""


@image.command(name="export")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The archive to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker", "oci"]),
    default="docker",
    show_default=True,
    help="docker: one tar that `docker load` reads (and that is also an OCI layout); oci: an OCI layout tar.",
)
@pass_context
def export_command(ctx: Context, ref: str, output: Path, fmt: str) -> None:
    """Write image REF (a service name, digest or digest prefix) as an archive.

    \b
    herd image export web -o web.tar && docker load -i web.tar
    """
    from herdsman.facade.images import export

    tag = export(ctx.project(), ref, output, fmt=fmt)
    console.print(f"wrote {output} ({human_size(output.stat().st_size)}) tagged {tag}")
