"""Commands about what the agent does and keeps: events, scale, quarantine, inspect, api.

When an agent runs, `herd scale` and `herd events -f` go through its API (`herdsman.client`);
without one they work on the state store directly, as `herd quarantine` and `herd inspect` do
with `.herd/quarantine`, so they are useful whether or not an agent runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import short
from herdsman.cli.out import console, rich_table

if TYPE_CHECKING:
    from herdsman.facade.views import Quarantine

ENV_OPTION = click.option(
    "-e", "--env", "env", help="The environment (default: [stack] environment, production)."
)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _event_line(event: dict[str, Any]) -> str:
    where = " ".join(x for x in (event["service"], event["instance"]) if x)
    return f"{_when(event['at'])}  {event['kind']:<10} {where + '  ' if where else ''}{event['message']}"


@click.command()
@ENV_OPTION
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen (Ctrl-C stops).")
@click.option("-n", "--last", type=int, default=50, show_default=True, help="How many past events to show.")
@click.option(
    "--kind", multiple=True, help="Only these kinds (rollout, heal, quarantine, scale, drift, agent...)."
)
@pass_context
def events(ctx: Context, env: str | None, follow: bool, last: int, kind: tuple[str, ...]) -> None:
    """What happened to the environment: deploys, heals, quarantines, scaling, drift, the agent."""
    from herdsman.facade.views import events as past_events
    from herdsman.facade.views import follow_events

    project = ctx.project()

    def show(event: dict[str, Any]) -> None:
        console.print(_event_line(event), markup=False, highlight=False, soft_wrap=True)

    shown = past_events(project, env, last=last, kinds=kind)
    for event in shown:
        show(event)
    if not follow:
        return
    newest = shown or past_events(project, env, last=1)  # follow from now, whatever the filter
    after = max((int(e["id"]) for e in newest), default=0)
    try:
        for event in follow_events(project, env, after=after, kinds=kind):
            show(event)
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("counts", nargs=-1, required=True, metavar="SERVICE=N|auto...")
@ENV_OPTION
@pass_context
def scale(ctx: Context, counts: tuple[str, ...], env: str | None) -> None:
    """Run N instances of a service, whatever the release says, until `SERVICE=auto`.

    \b
    herd scale web=5       five instances of web (this release and the next ones)
    herd scale web=auto    back to the release's count (and the autoscaler, if [service.web.scale])

    A replica count is runtime state, not a new release: it is recorded as an event and shown by
    `herd ps`. A running agent applies it at once (asked through its API); without one, this
    command does.
    """
    from herdsman.client import AgentClient
    from herdsman.errors import HerdError
    from herdsman.facade import open_stack

    project = ctx.project()
    parsed: list[tuple[str, int | None]] = []
    for item in counts:
        service, sep, value = item.partition("=")
        if not sep or service not in project.stack.service:
            raise HerdError(
                f"{item!r} is not SERVICE=N",
                hint=f"services: {', '.join(sorted(project.stack.service)) or 'none'}; e.g. web=3, web=auto",
            )
        if value == "auto":
            parsed.append((service, None))
        elif value.isdigit() and int(value) <= 10000:
            parsed.append((service, int(value)))
        else:
            raise HerdError(f"{item!r}: the count must be a number from 0 to 10000, or auto")
    with open_stack(project, env, driver_name=ctx.driver) as stack:
        for service, count in parsed:
            status = stack.scale(service, count)
            console.print(f"{service}: {status['replicas']} replica(s), set by {status['set_by']}")
    if isinstance(stack, AgentClient):
        console.print("the agent applies it now; `herd ps` shows the instances")
    else:
        console.print("done; no agent runs, so nothing keeps this count: `herd up -d`")


@click.command()
@ENV_OPTION
@pass_context
def verify(ctx: Context, env: str | None) -> None:
    """Check every running instance against its image and its release.

    The unpacked image is re-hashed against the per-file list recorded when it was unpacked (the
    docker driver reads `docker diff`), and the app's command and environment are compared with
    what its release says. A running agent also replaces what drifted (`drift = "replace"`, the
    default), keeping the differences in .herd/quarantine; without one this only reports.
    Exits 1 when something drifted.
    """
    from herdsman.client import AgentClient
    from herdsman.facade import open_stack

    with open_stack(ctx.project(), env, driver_name=ctx.driver) as stack:
        findings = stack.verify()
    rows = [
        (f["instance"], f["action"], "; ".join(f"{d['what']}: {d['detail']}" for d in f["drift"]))
        for f in findings
        if f["drift"]
    ]
    for f in findings:  # what could not be checked (a Swarm task on another node): said, not hidden
        for d in f.get("unchecked") or []:
            console.print(f"[yellow]{f['instance']}[/] {d['what']}: {d['detail']}", highlight=False)
    if rows and not isinstance(stack, AgentClient):
        console.print("[dim]no agent runs: nothing is replaced (`herd up -d` replaces drifted instances)[/]")
    if not rows:
        partly = " (except what is said above)" if findings else ""
        console.print(f"every running instance matches its image and release{partly}")
        return
    for instance, action, summary in rows:
        console.print(f"[red]{instance}[/] drifted ({action}): {summary}", highlight=False)
    raise SystemExit(1)


@click.group(invoke_without_command=True)
@click.pass_context
def quarantine(click_ctx: click.Context) -> None:
    """Quarantined instances: pulled from service, stopped, and kept for inspection.

    An instance that fails its liveness checks (or drifted from its image) is taken out of the
    router's pool, replaced, then stopped — but its record, log and what it wrote stay under
    .herd/quarantine/INSTANCE. `herd inspect INSTANCE` shows them; `herd quarantine purge` deletes.
    """
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(quarantine_list)


@quarantine.command(name="list")
@pass_context
def quarantine_list(ctx: Context) -> None:
    """List the quarantined instances, oldest first."""
    kept = _quarantine(ctx).all()
    if not kept:
        console.print("no quarantined instance")
        return
    table = rich_table()
    for column in ("instance", "service", "release", "when", "reason"):
        table.add_column(column)
    for item in kept:
        record = item.record
        table.add_row(
            item.id, item.service, str(record.get("release", "")), _when(item.when), record.get("reason", "")
        )
    console.print(table)


@quarantine.command(name="add")
@click.argument("instance")
@click.option("--reason", default="asked by hand", show_default=True, help="Kept in its record.")
@ENV_OPTION
@pass_context
def quarantine_add(ctx: Context, instance: str, reason: str, env: str | None) -> None:
    """Quarantine a running INSTANCE: the agent replaces it first (it answers until its replacement
    is admitted), then takes it out of the pool, stops it and keeps its record, log and /tmp."""
    from herdsman.client import AgentClient
    from herdsman.errors import HerdError
    from herdsman.facade import agent_running, keeper_of

    project = ctx.project()
    env = keeper_of(project, env)  # a preview's instances: the agent that keeps the preview
    if agent_running(project, env) is None:
        raise HerdError(
            "quarantining an instance needs a running agent (it replaces the instance first)",
            hint="`herd up -d` starts one",
        )
    with AgentClient.for_project(project.file, env) as client:
        asked = client.quarantine_instance(instance, reason)
    console.print(
        f"{asked['instance']} ({asked['service']}): being replaced, then kept; `herd quarantine` lists it"
    )


@quarantine.command(name="purge")
@click.argument("instances", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Delete every quarantined instance.")
@pass_context
def quarantine_purge(ctx: Context, instances: tuple[str, ...], everything: bool) -> None:
    """Delete quarantined instances (the given ones, or --all)."""
    from herdsman.errors import HerdError

    if not instances and not everything:
        raise HerdError("say which instances to purge, or --all", hint="`herd quarantine` lists them")
    purged = _quarantine(ctx).purge(None if everything else list(instances))
    console.print(f"purged {len(purged)} quarantined instance(s)")


@click.command()
@click.argument("instance")
@click.option("--lines", type=int, default=20, show_default=True, help="How many log lines to show.")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@pass_context
def inspect(ctx: Context, instance: str, lines: int, as_json: bool) -> None:
    """What a quarantined instance ran, why it was pulled, its last log lines and what it changed."""
    kept = _quarantine(ctx).get(instance)
    record = kept.record
    if as_json:
        click.echo(json.dumps({**record, "changed": kept.changed_files()}, indent=2, sort_keys=True))
        return
    out = console.print
    out(f"[bold]{kept.id}[/]  service {kept.service}, release {record.get('release')}", highlight=False)
    out(f"image      {short(str(record.get('image', '')))}  ({record.get('image', '')})", highlight=False)
    out(f"command    {' '.join(record.get('command') or []) or '(the image default)'}", highlight=False)
    out(f"pulled     {_when(kept.when)}: {record.get('reason', '')}", highlight=False)
    if record.get("node"):  # a multi-node driver's: where it ran (and, on Swarm elsewhere, still runs)
        out(f"node       {record['node']}", highlight=False)
    not_kept = kept.path / "tmp" / ".not-kept"
    if not_kept.is_file():
        out(f"not kept   {not_kept.read_text().strip()}", highlight=False, markup=False)
    health = record.get("health") or []
    if health:
        marks = " ".join("ok" if r["ok"] else f"FAIL({r['detail']})" for r in health[-8:])
        out(f"health     {marks}", highlight=False)
    changed = kept.changed_files()
    out(f"changed    {len(changed)} file(s) outside its volumes", highlight=False)
    for path in changed[:50]:
        out(f"  {path}", highlight=False, markup=False)
    out(f"evidence   {kept.path}", highlight=False)
    tail = kept.log_tail(lines)
    if tail:
        out(f"--- last {len(tail)} log lines ---")
        for line in tail:
            out(line, markup=False, highlight=False, soft_wrap=True)


def _quarantine(ctx: Context) -> Quarantine:
    from herdsman.facade.views import quarantine as kept

    return kept(ctx.project())


@click.group()
def api() -> None:
    """The agent's HTTP API: its schema and how to reach it.

    \b
    The agent serves it on .herd/run/agent-ENV.sock (mode 0600) and, with `herd up --api
    127.0.0.1:PORT`, on that address. Every request needs `Authorization: Bearer TOKEN`, the
    token being in .herd/agent-ENV.token. From Python: `herdsman.client.AgentClient`.
    """


@api.command(name="schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (default: print).")
def api_schema(output: str | None) -> None:
    """The OpenAPI schema of the agent's API (also in docs/openapi.json)."""
    from herdsman.facade.views import api_schema

    text = json.dumps(api_schema(), indent=2, sort_keys=True) + "\n"
    if output:
        with open(output, "w") as out:
            out.write(text)
        console.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)
