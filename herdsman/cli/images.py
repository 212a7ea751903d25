"""Commands about the stack file and images: init, check, images, image export (bake: bake.py)."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table

from herdsman.cli.app import Context, pass_context
from herdsman.cli.ui import console, human_size, short
from herdsman.errors import HerdError
from herdsman.image.assemble import ANNOTATION_REVISION, ANNOTATION_SERVICE, ANNOTATION_STACK
from herdsman.image.bake import image_store
from herdsman.image.lock import Lock
from herdsman.image.oci import ANNOTATION_PULLED, Descriptor, ImageStore
from herdsman.spec import STACK_FILE, Project
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
@pass_context
def check(ctx: Context) -> None:
    """Validate herd.toml and herd.lock; exit non-zero and list every problem if one is wrong."""
    from herdsman.facade import stack_warnings

    project = ctx.project()
    Lock.load(project.lock_file)
    stack = project.stack
    for warning in stack_warnings(project):
        console.print("[yellow]warning[/]: ", end="", highlight=False)
        console.print(warning, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"[green]ok[/] {project.file}: stack {stack.name!r}, "
        f"{len(stack.service)} service(s), {len(stack.volume)} volume(s)"
    )


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also list images of other stacks and bases.")
@pass_context
def images(ctx: Context, show_all: bool) -> None:
    """List the baked images: service, digest, size and the revision they were baked from."""
    project = ctx.project()
    store = image_store(project)
    table = Table(box=None, pad_edge=False)
    for column in ("service", "digest", "size", "revision"):
        table.add_column(column)
    for entry in reversed(store.index()):
        annotations = entry.annotations
        own = annotations.get(ANNOTATION_STACK) == project.stack.name or ANNOTATION_PULLED in annotations
        if not show_all and not own:
            continue
        manifest = store.manifest(entry.digest)
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        name = annotations.get(ANNOTATION_SERVICE) or annotations.get("org.opencontainers.image.ref.name", "")
        table.add_row(
            name, short(entry.digest), human_size(size), annotations.get(ANNOTATION_REVISION, "")[:12]
        )
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
    from herdsman.image.export import export_image

    project = ctx.project()
    store = image_store(project)
    descriptor = _find_image(store, project, ref)
    stack = descriptor.annotations.get(ANNOTATION_STACK, project.stack.name)
    service = descriptor.annotations.get(ANNOTATION_SERVICE, "image")
    tag = f"{stack}/{service}:{short(descriptor.digest)}"
    export_image(store, descriptor.digest, output, fmt=fmt, tag=tag)
    console.print(f"wrote {output} ({human_size(output.stat().st_size)}) tagged {tag}")


def _find_image(store: ImageStore, project: Project, ref: str) -> Descriptor:
    """An image by service name (its newest bake), digest, digest prefix or ref name."""
    if ref in project.stack.service:
        for entry in reversed(store.index()):
            ann = entry.annotations
            if ann.get(ANNOTATION_SERVICE) == ref and ann.get(ANNOTATION_STACK) == project.stack.name:
                return entry
        raise HerdError(f"service {ref!r} has no baked image yet", hint=f"run `herd bake {ref}`")
    return store.find(ref)
