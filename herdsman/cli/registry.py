"""`herd push` and `herd pull`: images to and from an OCI registry, always by digest."""

from __future__ import annotations

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.ui import console


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
    from herdsman.cli.images import _find_image
    from herdsman.facade import deployed_image
    from herdsman.image.bake import image_store
    from herdsman.image.registry import parse_reference
    from herdsman.image.registry import push as push_image

    project = ctx.project()
    store = image_store(project)
    deployed = deployed_image(project, env, image) if image in project.stack.service else None
    if deployed is not None:
        digest, release, where = deployed
        console.print(f"{image}: the image of release {release} ({where})", highlight=False)
    else:
        digest = _find_image(store, project, image).digest
    pushed = push_image(store, digest, parse_reference(target))
    console.print(f"pushed {pushed.uploaded} blob(s), {pushed.skipped} already there", highlight=False)
    click.echo(str(pushed.reference))


@click.command()
@click.argument("reference", metavar="REGISTRY/NAME@sha256:DIGEST")
@click.option("--resolve", is_flag=True, help="Accept REGISTRY/NAME:TAG: resolve the tag to a digest first.")
@pass_context
def pull(ctx: Context, reference: str, resolve: bool) -> None:
    """Fetch an image by digest into .herd/images, verifying every blob against its digest.

    A tag names different images over time, so pulling is by digest; --resolve looks a tag up
    once and says which digest it pulled.
    """
    from herdsman.errors import HerdError
    from herdsman.image.bake import image_store
    from herdsman.image.registry import parse_reference
    from herdsman.image.registry import pull as pull_image
    from herdsman.image.registry import resolve as resolve_tag

    ref = parse_reference(reference)
    if ref.digest is None:
        if not resolve:
            raise HerdError(
                f"{reference} names a tag; pull by digest",
                hint="herd pull REGISTRY/NAME@sha256:..., or --resolve to look the tag up once",
            )
        ref = ref.by_digest(resolve_tag(ref))
        console.print(f"{reference} is {ref.digest}", highlight=False)
    descriptor = pull_image(image_store(ctx.project()), ref, by="herd pull")
    console.print(f"pulled {ref} ({descriptor.size} byte manifest, every blob verified)", highlight=False)
