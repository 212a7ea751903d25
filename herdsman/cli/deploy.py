"""Commands that change or show what runs: deploy, rollback, releases, ps, down."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import click
from rich.table import Table

from herdsman.cli.app import Context, pass_context
from herdsman.cli.ui import RichReporter, console, short
from herdsman.deploy.release import changed_keys
from herdsman.deploy.run import Deployment

ENV_OPTION = click.option(
    "-e", "--env", "env", help="The environment (default: [stack] environment, production)."
)
WAIT_OPTION = click.option(
    "--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for another deploy to finish."
)


def _deployment(ctx: Context, env: str | None, reporter: RichReporter | None = None) -> Deployment:
    project = ctx.project()
    deployment = Deployment(project, env, reporter=reporter)
    try:
        from herdsman.router.client import ensure_router_pools
    except ImportError:
        console.print("[yellow]·[/] no router in this build yet: instances serve on their own ports")
        return deployment
    deployment.executor.pools = ensure_router_pools(project, deployment.env)
    return deployment


def _print_progress(deployment: Deployment) -> None:
    for line in deployment.executor.progress:
        console.print(f"[dim]·[/] {line}")
    deployment.executor.progress.clear()


@click.command(name="deploy")
@ENV_OPTION
@WAIT_OPTION
@pass_context
def deploy_command(ctx: Context, env: str | None, wait: float) -> None:
    """Bake, record a new immutable release, and replace the running instances with it.

    New instances start from the new image, are admitted by their health check, take the traffic,
    and the old ones drain and stop. If a new instance never becomes healthy, the deploy is
    reverted: the previous release keeps serving and the command fails with the reason.
    """
    started = time.monotonic()
    with RichReporter() as reporter:
        deployment = _deployment(ctx, env, reporter)
        try:
            release = asyncio.run(deployment.deploy(wait=wait))
        finally:
            _print_progress(deployment)
    seconds = time.monotonic() - started
    console.print(f"[green]release {release.number}[/] deployed to {deployment.env} in {seconds:.1f}s")


@click.command()
@click.argument("release", type=int, required=False)
@ENV_OPTION
@WAIT_OPTION
@pass_context
def rollback(ctx: Context, release: int | None, env: str | None, wait: float) -> None:
    """Roll out RELEASE's content again (default: the previous good release), as a new release.

    Nothing is edited: the rollback is a new release with the old one's images *and* config,
    deployed with the same policy as any deploy.
    """
    deployment = _deployment(ctx, env)
    try:
        new = asyncio.run(deployment.rollback(release, wait=wait))
    finally:
        _print_progress(deployment)
    console.print(
        f"[green]release {new.number}[/] (a copy of release {new.copy_of}) deployed to {deployment.env}"
    )


@click.command()
@ENV_OPTION
@pass_context
def releases(ctx: Context, env: str | None) -> None:
    """The release history: number, when, images, what changed, status and trigger."""
    project = ctx.project()
    deployment = Deployment(project, env)
    table = Table(box=None, pad_edge=False)
    for column in ("release", "when", "images", "changed", "status", "trigger"):
        table.add_column(column)
    previous = None
    for release in deployment.state.releases(deployment.env):
        images = ", ".join(f"{name}={short(entry['image'])}" for name, entry in release.services().items())
        changed = ", ".join(changed_keys(previous, release.content)) or "nothing"
        when = datetime.fromtimestamp(release.created).strftime("%Y-%m-%d %H:%M:%S")
        status = release.status + (f": {release.reason.splitlines()[0]}" if release.reason else "")
        table.add_row(str(release.number), when, images, changed, status, release.trigger)
        previous = release.content
    console.print(table)


@click.command()
@ENV_OPTION
@pass_context
def ps(ctx: Context, env: str | None) -> None:
    """The instances of the environment: service, release, image, state, uptime, address."""
    project = ctx.project()
    deployment = Deployment(project, env)
    labels = {"herd.stack": project.stack.name, "herd.env": deployment.env}
    instances = asyncio.run(deployment.driver.list(labels))
    table = Table(box=None, pad_edge=False)
    for column in ("instance", "service", "release", "image", "state", "uptime", "address"):
        table.add_column(column)
    now = time.time()
    for item in instances:
        uptime = f"{now - item.started:.0f}s" if item.state == "running" else "-"
        state = item.state if not item.detail else f"{item.state} ({item.detail})"
        image = short(item.labels.get("herd.image", ""))
        table.add_row(item.id, item.service, str(item.release), image, state, uptime, item.address)
    console.print(table)


@click.command()
@ENV_OPTION
@pass_context
def down(ctx: Context, env: str | None) -> None:
    """Stop every instance of the environment. Volumes, logs and releases stay."""
    deployment = _deployment(ctx, env)
    count = asyncio.run(deployment.down())
    console.print(f"stopped {count} instance(s) of {deployment.env}; volumes and logs are kept")


@click.command()
@click.argument("services", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they arrive (Ctrl-C stops).")
@click.option("--release", type=int, help="Only instances of this release (also ones replaced since).")
@click.option("--since", help='Only lines newer than this, e.g. "10m" or "2h".')
@pass_context
def logs(
    ctx: Context, services: tuple[str, ...], follow: bool, release: int | None, since: str | None
) -> None:
    """Print the logs of SERVICES (default: all), merged by time, including replaced instances."""
    from herdsman import logs as log_store
    from herdsman.spec import herd_home, parse_duration

    project = ctx.project()
    root = herd_home(project) / "logs"
    try:
        cutoff = time.time() - parse_duration(since) if since else 0.0
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    for line in log_store.read(log_store.log_files(root, services, release), cutoff):
        console.print(line.render(), markup=False, highlight=False, soft_wrap=True)
    if follow:
        for line in log_store.follow(root, services, release):
            console.print(line.render(), markup=False, highlight=False, soft_wrap=True)
