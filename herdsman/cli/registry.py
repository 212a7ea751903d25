"""`herd push` and `herd pull`: images to and from an OCI registry, always by digest."""

from __future__ import annotations

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.out import console


@click.command()
@click.argument("image")
@click.argument("target", metavar="REGISTRY/NAME[:TAG]")
@click.option("-e", "--env", "env", help="Whose deployed image a service name means (default: production).")
@pass_context
def push(ctx: Context, image: str, target: str, env: str | None) -> None:
    """Send IMAGE (a service name, digest or digest prefix) to a registry.

    \b
    herd push web 127.0.0.1:5000/hello/web:v3

    A service name means the image its environment runs (the current release's), not the newest
    bake; with no release yet, the newest bake.

    Blobs the registry already has are skipped; the manifest is stored by digest (and under the
    tag, when given), byte for byte, so the image keeps its digest. Prints the reference by digest,
    which is what to deploy or pull. Credentials: HERD_REGISTRY_USERNAME, HERD_REGISTRY_PASSWORD.
    """
    from herdsman.facade.images import push as push_image

    pushed = push_image(ctx.project(), image, target, env=env)
    if pushed.release is not None:
        console.print(f"{image}: the image of release {pushed.release} ({pushed.env})", highlight=False)
    console.print(f"pushed {pushed.uploaded} blob(s), {pushed.skipped} already there", highlight=False)
    click.echo(pushed.reference)


@click.command()
@click.argument("reference", metavar="REGISTRY/NAME@sha256:DIGEST")
@click.option("--resolve", is_flag=True, help="Accept REGISTRY/NAME:TAG: resolve the tag to a digest first.")
@pass_context
def pull(ctx: Context, reference: str, resolve: bool) -> None:
    """Fetch an image by digest into .herd/images, verifying every blob against its digest.

    A tag names different images over time, so pulling is by digest; --resolve looks a tag up
    once and says which digest it pulled.
    """
    from herdsman.facade.images import pull as pull_image

    pulled = pull_image(ctx.project(), reference, resolve=resolve)
    if pulled.resolved_from is not None:
        console.print(f"{pulled.resolved_from} is {pulled.reference.rpartition('@')[2]}", highlight=False)
    message = f"pulled {pulled.reference} ({pulled.manifest_size} byte manifest, every blob verified)"
    console.print(message, highlight=False)
