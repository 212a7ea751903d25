"""Commands that change or show what runs: deploy, rollback, releases, ps, down."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import datetime

import click
from rich.table import Table

from herdsman.agent.daemon import Agent
from herdsman.cli.app import Context, pass_context
from herdsman.cli.ui import RichReporter, console, short
from herdsman.client import AgentClient
from herdsman.deploy.release import changed_keys
from herdsman.deploy.run import Deployment
from herdsman.drivers.base import InstanceState
from herdsman.errors import HerdError

ENV_OPTION = click.option(
    "-e", "--env", "env", help="The environment (default: [stack] environment, production)."
)
WAIT_OPTION = click.option(
    "--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for another deploy to finish."
)


def _print_step(line: str) -> None:
    console.print(f"[dim]·[/] {line}", highlight=False)


@click.command(name="deploy")
@ENV_OPTION
@WAIT_OPTION
@click.option("--force", is_flag=True, help="Roll out a new release even when nothing changed.")
@pass_context
def deploy_command(ctx: Context, env: str | None, wait: float, force: bool) -> None:
    """Bake, record a new immutable release, and replace the running instances with it.

    New instances start from the new image, are admitted by their health check, take the traffic,
    and the old ones drain and stop. If a new instance never becomes healthy, the deploy is
    reverted: the previous release keeps serving and the command fails with the reason. When the
    images, config and routes equal the current release's, nothing is recorded or replaced.
    """
    from herdsman.facade import (
        bake_here,
        current_release_number,
        declared_secrets,
        environment_of,
        open_stack,
    )

    started = time.monotonic()
    project = ctx.project()
    before = current_release_number(project, env)
    with (
        RichReporter() as reporter,
        open_stack(project, env, driver_name=ctx.driver, reporter=reporter, wait=wait) as stack,
    ):
        if isinstance(stack, AgentClient):
            bake_here(project, reporter)  # progress shows here; the agent's bake is then cached
            console.print("[dim]the agent of this environment runs: deploying through it[/]")
        release = stack.deploy(declared_secrets(project), on_progress=_print_step, force=force)
    seconds = time.monotonic() - started
    where = environment_of(project, env)
    if release["number"] == before:
        console.print(f"nothing changed: release {before} is current in {where}")
        return
    console.print(f"[green]release {release['number']}[/] deployed to {where} in {seconds:.1f}s")


@click.command()
@click.argument("release", type=int, required=False)
@ENV_OPTION
@WAIT_OPTION
@click.option(
    "--restore-data",
    is_flag=True,
    help="Also put back the volumes as they were before the migrations of later releases.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before restoring data.")
@pass_context
def rollback(
    ctx: Context, release: int | None, env: str | None, wait: float, restore_data: bool, yes: bool
) -> None:
    """Roll out RELEASE's content again (default: the previous good release), as a new release.

    Nothing is edited: the rollback is a new release with the old one's images *and* config,
    deployed with the same policy as any deploy. Data is not rolled back: if a later release
    migrated a volume, you are told so; --restore-data puts back the snapshot taken before the
    first such migration (the services using it stop meanwhile), after asking.
    """
    from herdsman.deploy.data import migrations_after, snapshots_to_restore
    from herdsman.facade import declared_secrets, open_stack

    project = ctx.project()
    deployment = Deployment(project, env, driver_name=ctx.driver)
    source = deployment.rollback_source(release)
    migrated = migrations_after(deployment, source.number)
    snapshots = None
    if migrated and not restore_data:
        names = ", ".join(f"release {m.release} ({m.service})" for m in migrated)
        console.print(
            f"[yellow]warning[/]: data is not rolled back: {names} migrated it after release "
            f"{source.number}; release {source.number} will run on the migrated data "
            "(--restore-data puts back the snapshot taken before the first migration)",
            highlight=False,
        )
    elif migrated:
        snapshots = snapshots_to_restore(deployment, source.number)
        missing = [str(path) for path in snapshots.values() if not path.is_dir()]
        if missing:
            raise HerdError(f"no snapshot to restore: {', '.join(missing)}", hint="they may have been pruned")
        listing = ", ".join(f"{v} from {p}" for v, p in sorted(snapshots.items()))
        if not yes:
            click.confirm(f"restore {listing}? Changes made since are lost", abort=True)
    with open_stack(project, env, driver_name=ctx.driver, wait=wait) as stack:
        new = stack.rollback(
            release, declared_secrets(project), on_progress=_print_step, restore_data=snapshots is not None
        )
    console.print(
        f"[green]release {new['number']}[/] (a copy of release {new['copy_of']}) deployed to {deployment.env}"
    )


@click.command()
@ENV_OPTION
@pass_context
def releases(ctx: Context, env: str | None) -> None:
    """The release history: number, when, images, what changed, status and trigger."""
    project = ctx.project()
    deployment = Deployment(project, env, driver_name=ctx.driver)
    table = Table(box=None, pad_edge=False)
    for column in ("release", "when", "images", "changed", "status", "trigger"):
        table.add_column(column)
    previous = None
    for release in deployment.state.releases(deployment.env):
        images = ", ".join(f"{name}={short(entry.image)}" for name, entry in release.services().items())
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
    deployment = Deployment(project, env, driver_name=ctx.driver)
    instances = asyncio.run(deployment.driver.list(deployment.executor.target.selector))
    health = asyncio.run(_probe_all(deployment, instances))
    table = Table(box=None, pad_edge=False)
    for column in ("instance", "service", "release", "image", "state", "health", "uptime", "address"):
        table.add_column(column)
    now = time.time()
    for item in instances:
        uptime = f"{now - item.started:.0f}s" if item.state == "running" else "-"
        state = item.state if not item.detail else f"{item.state} ({item.detail})"
        image = short(item.labels.get("herd.image", ""))
        table.add_row(
            item.id, item.service, str(item.release), image, state, health[item.id], uptime, item.address
        )
    console.print(table)
    for service, (count, mode) in sorted(deployment.state.scales(deployment.env).items()):
        who = "herd scale" if mode == "fixed" else "the autoscaler"
        console.print(f"{service}: {count} replica(s), set by {who}", highlight=False)
    for service, note in sorted(deployment.state.notes(deployment.env).items()):
        console.print(f"[yellow]{service}[/]: {note}", highlight=False)


async def _probe_all(deployment: Deployment, instances: list[InstanceState]) -> dict[str, str]:
    """One health probe per running instance, all at once, with the check of its release."""
    from herdsman.health import probe

    async def one(item: InstanceState) -> tuple[str, str]:
        if item.state != "running":
            return item.id, "-"
        try:
            entry = deployment.state.release(deployment.env, item.release).services()[item.service]
        except (HerdError, KeyError):
            return item.id, "?"
        check = entry.config.health
        if check is None:
            return item.id, "no check"
        inside = functools.partial(deployment.driver.exec, item.id)  # a command check runs in it
        result = await probe(check, "127.0.0.1", item.port, inside)
        return item.id, "healthy" if result.ok else f"failing ({result.detail})"

    return dict(await asyncio.gather(*(one(i) for i in instances)))


@click.command()
@ENV_OPTION
@pass_context
def down(ctx: Context, env: str | None) -> None:
    """Stop the agent and every instance of the environment. Volumes, logs and releases stay."""
    from herdsman.facade import environment_of, stop_stack

    project = ctx.project()
    stopped = stop_stack(project, env, driver_name=ctx.driver)
    if stopped.agent is not None:
        console.print(f"stopped the agent (pid {stopped.agent})")
    if stopped.router:
        console.print("stopped the router")
    where = environment_of(project, env)
    console.print(f"stopped {stopped.instances} instance(s) of {where}; volumes and logs are kept")


@click.command()
@click.argument("services", nargs=-1)
@click.option(
    "-f", "--follow", is_flag=True, help="Print new lines from now on, as they arrive (Ctrl-C stops)."
)
@click.option("--release", type=int, help="Only instances of this release (also ones replaced since).")
@click.option("--since", help='Only lines newer than this, e.g. "10m" or "2h" (with -f: then follow).')
@click.option(
    "-n", "--lines", "last", type=click.IntRange(min=0), help="Only the last N lines (with -f: then follow)."
)
@pass_context
def logs(
    ctx: Context,
    services: tuple[str, ...],
    follow: bool,
    release: int | None,
    since: str | None,
    last: int | None,
) -> None:
    """Print the logs of SERVICES (default: all), merged by time, including replaced instances.

    With -f, follow from now, as `tail -f` and `docker logs -f` do: no history unless --since or
    -n asks for some."""
    from herdsman import logs as log_store
    from herdsman.spec import herd_home, parse_duration

    project = ctx.project()
    unknown = sorted(set(services) - set(project.stack.service))
    if unknown:
        raise HerdError(
            f"no service {', '.join(unknown)} in {project.file.name}",
            hint=f"services: {', '.join(sorted(project.stack.service)) or 'none'}",
        )
    root = herd_home(project) / "logs"
    try:
        cutoff = time.time() - parse_duration(since) if since else 0.0
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if not follow or since or last is not None:
        for line in log_store.history(root, services, release, cutoff, last):
            console.print(line.render(), markup=False, highlight=False, soft_wrap=True)
    if follow:
        for line in log_store.follow(root, services, release):
            console.print(line.render(), markup=False, highlight=False, soft_wrap=True)


@click.command()
@ENV_OPTION
@click.option(
    "-d", "--detach", is_flag=True, help="Run the agent in the background (log: .herd/logs/agent-ENV.log)."
)
@click.option(
    "--no-deploy",
    is_flag=True,
    help="Only resume and keep what runs; start no release (not even a stopped one).",
)
@click.option(
    "--api",
    "api_listen",
    metavar="127.0.0.1:PORT",
    help="Also serve the agent's API on this loopback address (it is always on .herd/run/agent-ENV.sock).",
)
@pass_context
def up(ctx: Context, env: str | None, detach: bool, no_deploy: bool, api_listen: str | None) -> None:
    """Keep the stack running with the agent, from its current release (in the foreground).

    The agent runs the current release: `herd up` after `herd rollback` keeps the rollback, and
    changed files are deployed by `herd deploy`, not by `herd up`. After `herd down` the last
    release is started again; only a stack with no release at all has its files deployed (as
    release 1), and `herd up` says so. Ctrl-C stops the agent only: instances (and the router)
    keep serving, and the next `herd up` adopts them. With -d the agent runs detached and the
    command returns once it is ready.
    """
    import os

    from herdsman.facade import start_agent, up_starts_from

    project = ctx.project()
    starts = "" if no_deploy else up_starts_from(project, env)
    if detach:
        pid, log = start_agent(project, env, driver_name=ctx.driver, deploy=not no_deploy, api=api_listen)
        if starts:
            console.print(f"[bold]{starts}[/]", highlight=False)
        console.print(
            f"agent running in the background (pid {pid}, log {log}); `herd ps` shows the instances"
        )
        return
    agent = Agent(project, env, api=api_listen, driver_name=ctx.driver)
    if starts:
        console.print(f"[bold]{starts}[/]", highlight=False)
    console.print(
        f"agent for {agent.env} starting (pid {os.getpid()}); Ctrl-C stops the agent, not the instances"
    )
    asyncio.run(_run_agent(agent, deploy=not no_deploy))


async def _run_agent(agent: Agent, *, deploy: bool) -> None:
    import os

    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(deploy=deploy, ready=ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        agent.deployment.state.event(agent.env, "agent", f"agent ready (pid {os.getpid()})")
        console.print("[green]ready[/]: the stack runs; this agent keeps it so")
    waiting.cancel()
    await task
