"""Commands that change or show what runs: deploy, rollback, releases, down (`herd ps`: cli/ps.py)."""

from __future__ import annotations

import time
from datetime import datetime

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import short
from herdsman.cli.out import console, rich_table
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
    from herdsman.cli.ui import RichReporter
    from herdsman.client import AgentClient  # here: httpx costs `herd --help` 70 ms
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
    from herdsman.facade import declared_secrets, open_stack
    from herdsman.facade.views import rollback_preview

    project = ctx.project()
    preview = rollback_preview(project, env, release, driver_name=ctx.driver)
    source = preview.source
    if preview.migrated and not restore_data:
        names = ", ".join(f"release {number} ({service})" for number, service in preview.migrated)
        console.print(
            f"[yellow]warning[/]: data is not rolled back: {names} migrated it after release "
            f"{source}; release {source} will run on the migrated data "
            "(--restore-data puts back the snapshot taken before the first migration)",
            highlight=False,
        )
    elif preview.migrated:
        if preview.missing:
            missing = ", ".join(str(path) for path in preview.missing)
            raise HerdError(f"no snapshot to restore: {missing}", hint="they may have been pruned")
        listing = ", ".join(f"{v} from {p}" for v, p in sorted(preview.snapshots.items()))
        if not yes:
            click.confirm(f"restore {listing}? Changes made since are lost", abort=True)
    with open_stack(project, env, driver_name=ctx.driver, wait=wait) as stack:
        new = stack.rollback(
            release,
            declared_secrets(project),
            on_progress=_print_step,
            restore_data=restore_data and bool(preview.migrated),
        )
    console.print(
        f"[green]release {new['number']}[/] (a copy of release {new['copy_of']}) deployed to {preview.env}"
    )


@click.command()
@ENV_OPTION
@pass_context
def releases(ctx: Context, env: str | None) -> None:
    """The release history: number, when, images, what changed, status, trigger and who asked."""
    from herdsman.facade.views import release_history

    table = rich_table()
    for column in ("release", "when", "images", "changed", "status", "trigger", "by"):
        table.add_column(column)
    for row in release_history(ctx.project(), env):
        images = ", ".join(f"{name}={short(digest)}" for name, digest in row.images.items())
        when = datetime.fromtimestamp(row.created).strftime("%Y-%m-%d %H:%M:%S")
        status = row.status + (f": {row.reason.splitlines()[0]}" if row.reason else "")
        changed = ", ".join(row.changed) or "nothing"
        table.add_row(str(row.number), when, images, changed, status, row.trigger, row.by or "-")
    console.print(table)


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

    A name may also be an instance (`herd ps`, `herd quarantine`): only its lines.

    With -f, follow from now, as `tail -f` and `docker logs -f` do: no history unless --since or
    -n asks for some."""
    from herdsman.facade.views import follow_logs, log_lines
    from herdsman.spec import parse_duration

    project = ctx.project()
    try:
        cutoff = time.time() - parse_duration(since) if since else 0.0
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if not follow or since or last is not None:
        for line in log_lines(project, services, release=release, since=cutoff, last=last):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if follow:
        for line in follow_logs(project, services, release=release):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


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
    from herdsman.facade import run_agent

    if starts:
        console.print(f"[bold]{starts}[/]", highlight=False)
    run_agent(
        project,
        env,
        driver_name=ctx.driver,
        api=api_listen,
        deploy=not no_deploy,
        on_start=lambda name: console.print(
            f"agent for {name} starting (pid {os.getpid()}); Ctrl-C stops the agent, not the instances"
        ),
        on_ready=lambda: console.print("[green]ready[/]: the stack runs; this agent keeps it so"),
    )


@click.command(name="diff")
@click.argument("first", type=int)
@click.argument("second", type=int)
@ENV_OPTION
@pass_context
def diff_command(ctx: Context, first: int, second: int, env: str | None) -> None:
    """What changed from release FIRST to release SECOND: config values by key, images by layer.

    \b
    herd diff 3 4      what release 4 changed
    herd diff 4 2      what a rollback from 4 to 2 would change
    """
    from herdsman.facade.views import release_diff

    found = release_diff(ctx.project(), first, second, env)
    if not found.changes:
        console.print(f"releases {first} and {second} of {found.env} are the same (images and config)")
        return
    for change in found.changes:
        console.print(f"[bold]{change.path}[/]", highlight=False)
        console.print(f"  [red]- {change.before}[/]", markup=True, highlight=False)
        console.print(f"  [green]+ {change.after}[/]", markup=True, highlight=False)
    for service, layers in found.layers.items():
        if layers is None:
            console.print(
                f"{service}: an image is not in this project's store, so its layers are not compared"
            )
            continue
        console.print(f"{service}: {len(layers.same)} layer(s) shared", highlight=False)
        for layer in layers.removed:
            console.print(f"  [red]- {short(layer.digest)}[/] {layer.made_by}", highlight=False)
        for layer in layers.added:
            console.print(f"  [green]+ {short(layer.digest)}[/] {layer.made_by}", highlight=False)
