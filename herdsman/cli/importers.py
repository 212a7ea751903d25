"""`herd import compose.yaml`: a way in for a stack that runs on docker compose today."""

from __future__ import annotations

from pathlib import Path

import click

from herdsman.cli.out import console


@click.command(name="import")
@click.argument("compose_file", type=click.Path(path_type=Path), metavar="COMPOSE_FILE")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="The herd.toml to write (default: herd.toml beside the compose file).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing herd.toml.")
def import_command(compose_file: Path, output: Path | None, force: bool) -> None:
    """Write a commented herd.toml from a docker compose file.

    \b
    herd import compose.yaml            # writes herd.toml beside it
    herd check && herd deploy

    Services, images (a build context's Dockerfile becomes an image recipe; a registry image a
    base pinned by digest in herd.lock), command and entrypoint, environment and env_file, the
    first port as a loopback route, healthcheck as [health], named volumes, deploy.replicas and
    resource limits, cap_add and secrets (by name, never values). Variables are substituted as
    compose does, from the environment and the .env file beside the compose file. What has no
    equivalent is listed at the end of the file, with why.
    """
    from herdsman.facade.importers import import_compose

    result = import_compose(compose_file, output, force=force)
    console.print(
        f"wrote {result.written}: {len(result.services)} service(s) ({', '.join(result.services)}), "
        f"{len(result.volumes)} volume(s)",
        highlight=False,
    )
    if result.gaps:
        console.print(
            f"[yellow]{len(result.gaps)} thing(s) with no equivalent[/] (listed at the end of the file):"
        )
        for gap in result.gaps:
            console.print(f"  {gap}", highlight=False, markup=False)
    console.print("next: read it through, then `herd check`")
