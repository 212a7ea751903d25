"""`herd export kubernetes [ENV] -o DIR`: a release as manifests a cluster admin can apply as they are."""

from __future__ import annotations

import re
from pathlib import Path

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.out import console
from herdsman.errors import Problem


@click.group(name="export")
def export_group() -> None:
    """Hand a release to another engine (today: Kubernetes manifests)."""


def _quantity(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?([KMGTPE]i|[kMGTPE])?", value):
        raise click.BadParameter(f"{value!r} is not a storage quantity, such as 1Gi or 500Mi")
    return value


@export_group.command(name="kubernetes", short_help="The current release as Kubernetes manifests.")
@click.argument("env", required=False)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="The directory to write to."
)
@click.option("--release", "number", type=int, help="Export this release (default: the one serving now).")
@click.option(
    "--registry",
    metavar="REGISTRY/PREFIX",
    help="Where the cluster pulls images from (default: [environment.ENV] registry); "
    "a service's image is REGISTRY/PREFIX/SERVICE@DIGEST.",
)
@click.option(
    "--no-check-registry",
    is_flag=True,
    help="Do not ask the registry whether it holds every image (offline).",
)
@click.option(
    "--volume-size",
    default="1Gi",
    show_default=True,
    callback=_quantity,
    help="The storage each volume's claim asks for.",
)
@click.option(
    "--pull-secret",
    metavar="NAME",
    help="The docker-registry Secret the pods log in to the registry with (a private registry).",
)
@pass_context
def kubernetes(
    ctx: Context,
    env: str | None,
    output: Path,
    number: int | None,
    registry: str | None,
    no_check_registry: bool,
    volume_size: str,
    pull_secret: str | None,
) -> None:
    """Write ENV's current release (default: [stack] environment) as Kubernetes manifests in OUTPUT.

    \b
    herd deploy                                  # pushes to [environment.ENV] registry
    herd export kubernetes -o k8s/
    k8s/apply.sh -n hello                        # claims, migration Job (waited for), the rest

    One YAML file per object, named in the order to apply them: a PersistentVolumeClaim per
    volume (10-), a Job for [migrate] (20-, named after the release), then per service a
    Deployment (image by digest, maxUnavailable from [deploy], probes from [health], preStop and
    terminationGracePeriodSeconds from stop_grace, read-only root, non-root, no capabilities,
    resources from [limits]), a Service for a port, a HorizontalPodAutoscaler for [scale] and a
    PodDisruptionBudget. Secrets are references to keys of the Secret STACK-secrets, which you
    create: `kubectl create secret generic STACK-secrets --from-literal=NAME=VALUE`; no value is
    ever written. herdsman's labels become herd.dev/stack, herd.dev/env, herd.dev/service and
    herd.dev/release (the image digest is the annotation herd.dev/image).

    `kubectl apply -f OUTPUT` also works, but applies the migration Job and the new pods at once;
    apply.sh waits for the Job to complete first. The same release gives the same bytes. What has
    no Kubernetes equivalent is printed as warnings (also: `herd check --for kubernetes`).
    """
    from herdsman.facade.export import export_kubernetes

    project = ctx.project()
    done = export_kubernetes(
        project,
        env,
        output,
        number=number,
        registry=registry,
        check_registry=not no_check_registry,
        volume_size=volume_size,
        pull_secret=pull_secret,
    )
    print_gaps(done.gaps)
    console.print(
        f"wrote {len(done.written)} file(s) to {output}: release {done.release} of {done.env}, "
        f"{done.objects} object(s); apply with {output / 'apply.sh'}",
        highlight=False,
    )
    if done.secrets:
        console.print(
            f"the pods read secret(s) {', '.join(done.secrets)} from the Secret "
            f"{done.secret_name}: create it in the cluster before applying",
            highlight=False,
        )


def print_gaps(gaps: list[Problem]) -> None:
    for gap in gaps:
        console.print(f"[yellow]warning[/]: {gap.render()}", highlight=False)
        if gap.hint:
            console.print(f"  [dim]hint: {gap.hint}[/]", highlight=False)
