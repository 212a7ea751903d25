"""`herd preview create | ls | rm | logs`: short-lived environments from production's bytes."""

from __future__ import annotations

import time

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import columns
from herdsman.cli.out import console


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    from herdsman.errors import HerdError
    from herdsman.spec.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except (ValueError, HerdError) as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    if seconds <= 0:
        raise click.BadParameter("a preview needs a time to live, such as 30m or 2h", param_hint="--ttl")
    return seconds


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@click.group()
def preview() -> None:
    """Previews: short-lived environments (preview-NAME) from production's exact images, on their
    own instances, volumes, logs and address; removed when their time to live ends.

    \b
    herd preview create NAME [--release N | --from-files] [--ttl 2h] [--replicas 1] [--copy-volumes] [--host]
    herd preview ls              name, age, time left, address, release, kept
    herd preview keep NAME --for 2h | --forever | --off     kept past its time to live (or no longer)
    herd preview rm NAME         its instances, route, volumes and logs go (kept or not)
    herd preview logs NAME       its own logs, merged by time
    """


@preview.command(name="create")
@click.argument("name")
@click.option("--release", type=int, help="The production release to run (default: the current one).")
@click.option("--from-files", is_flag=True, help="Bake the working tree (same cache) instead of a release.")
@click.option("--ttl", help="How long it lives (default: [preview] ttl, 2h).")
@click.option("--replicas", type=click.IntRange(0, 100), default=1, show_default=True)
@click.option(
    "--copy-volumes", is_flag=True, help="Start from a copy of production's volumes (default: empty)."
)
@click.option(
    "--host",
    "on_host",
    is_flag=True,
    help="Route by Host NAME.preview.localhost on production's listener (default: a free port).",
)
@click.option("--keep", is_flag=True, help="Keep it past its time to live, until `herd preview rm`.")
@pass_context
def create(
    ctx: Context,
    name: str,
    release: int | None,
    from_files: bool,
    ttl: str | None,
    replicas: int,
    copy_volumes: bool,
    on_host: bool,
    keep: bool,
) -> None:
    """Start preview NAME (environment preview-NAME)."""
    from herdsman.facade.preview import create as make
    from herdsman.facade.preview import url_of

    if release is not None and from_files:
        raise click.UsageError("--release and --from-files exclude each other")
    made = make(
        ctx.project(),
        name,
        release=release,
        from_files=from_files,
        ttl=_duration(ttl),
        replicas=replicas,
        copy_volumes=copy_volumes,
        host=on_host,
        keep=keep,
        say=lambda line: console.print(line, highlight=False),
    )
    until = "it is removed (kept)" if made.kept else time.strftime("%H:%M:%S", time.localtime(made.expires))
    console.print(
        f"preview {made.name} serves release {made.release} ({made.source}) until {until}",
        highlight=False,
    )
    for service, route in sorted(made.routes.items()):
        console.print(f"  {service}: {url_of(route)}", highlight=False)


@preview.command(name="ls")
@pass_context
def ls(ctx: Context) -> None:
    """Every preview: age, time left, address, release (expired ones are removed first)."""
    from herdsman.facade.preview import listing, url_of

    rows = listing(ctx.project())
    if not rows:
        console.print("no preview (`herd preview create NAME` makes one)")
        return
    now = time.time()
    table = [["name", "age", "ttl", "address", "release", "state", "kept"]]
    for row in rows:
        table.append(
            [
                row.name,
                _span(now - row.created),
                _span(row.expires - now),
                " ".join(f"{s}={url_of(r)}" for s, r in sorted(row.routes.items())) or "-",
                f"{row.release if row.release is not None else '-'} ({row.source})",
                row.state,
                _kept(row.kept, row.kept_until, now),
            ]
        )
    click.echo(columns(table))


def _kept(kept: bool, until: float | None, now: float) -> str:
    if not kept:
        return "-"
    if until is None:
        return "kept"
    return f"kept until {time.strftime('%H:%M:%S', time.localtime(until))} ({_span(until - now)})"


@preview.command(name="keep")
@click.argument("name")
@click.option("--for", "duration", help="How long to keep it from now, e.g. 2h (or 30m, 1d).")
@click.option("--forever", is_flag=True, help="Keep it until `herd preview rm`.")
@click.option("--off", is_flag=True, help="No longer kept: it goes once its time to live is up.")
@pass_context
def keep(ctx: Context, name: str, duration: str | None, forever: bool, off: bool) -> None:
    """Keep preview NAME past its time to live: the agent's expiry leaves it; `herd preview rm`
    still removes it. When the keep ends, it goes at the next expiry round (if its TTL is up)."""
    from herdsman.facade.preview import keep as keeping

    kept = keeping(ctx.project(), name, duration=duration, forever=forever, off=off)
    if kept.kept:
        console.print(f"{kept.name}: {_kept(kept.kept, kept.kept_until, time.time())}", highlight=False)
    else:
        left = _span(kept.expires - time.time())
        console.print(f"{kept.name}: no longer kept; it goes when its time to live is up ({left})")


@preview.command(name="rm")
@click.argument("name")
@pass_context
def rm(ctx: Context, name: str) -> None:
    """Remove preview NAME: its instances, route, volumes, logs and snapshots."""
    from herdsman.facade.preview import remove

    remove(ctx.project(), name, say=lambda line: console.print(line, highlight=False))


@preview.command(name="logs")
@click.argument("name")
@click.option("-n", "--lines", type=int, help="Only the last N lines.")
@pass_context
def logs(ctx: Context, name: str, lines: int | None) -> None:
    """The logs of preview NAME's instances, merged by time."""
    from herdsman.facade.preview import log_lines

    for line in log_lines(ctx.project(), name, lines):
        click.echo(line)
