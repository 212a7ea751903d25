"""`herd canary status | promote | abort`: watch a canary's verdict, or overrule it."""

from __future__ import annotations

import time

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.out import console, rich_table

ENV_OPTION = click.option("-e", "--env", "env", help="The environment (default: [stack] environment).")


@click.group()
def canary() -> None:
    """Canaries (strategy = "canary"): the live numbers of both sides, and a person's say.

    \b
    herd canary status           each service's canary: weight, requests, errors, p50/p99, which
                                 baseline (fresh instances of the serving release, or the serving
                                 ones and why), verdict
    herd canary promote [SVC]    pass every remaining step now; the rest rolls out
    herd canary abort [SVC]      fail it now: all traffic back to the current release
    """


def _side(numbers: dict[str, float], side: str) -> str:
    requests = int(numbers.get(f"{side}_requests", 0))
    rate = numbers.get(f"{side}_error_rate", 0.0)
    p50, p99 = numbers.get(f"{side}_p50_ms"), numbers.get(f"{side}_p99_ms")
    latency = f"p50 {p50:g} ms, p99 {p99:g} ms" if p50 is not None and p99 is not None else "no latency yet"
    return f"{requests} req, {rate:.2%} errors, {latency}"


@canary.command(name="status")
@ENV_OPTION
@pass_context
def status(ctx: Context, env: str | None) -> None:
    """Each service's latest canary, live while it is judged."""
    from herdsman.facade.canary import canaries

    rows = canaries(ctx.project(), env)
    if not rows:
        console.print('no canary yet (one runs during `herd deploy` of a service with strategy = "canary")')
        return
    table = rich_table()
    columns = ("service", "release", "weight", "state", "for", "canary", "baseline", "against", "verdict")
    for column in columns:
        table.add_column(column)
    for row in rows:
        numbers = row["numbers"]
        table.add_row(
            row["service"],
            str(row["release"]),
            f"{row['weight']}%",
            row["state"]
            + (f" ({row['decision']} asked)" if row["decision"] and row["state"] == "judging" else ""),
            f"{time.time() - row['since']:.0f}s",
            _side(numbers, "canary"),
            _side(numbers, "baseline"),
            row.get("baseline") or "serving",
            row["reason"],
        )
    console.print(table)


@canary.command(name="promote")
@click.argument("service", required=False)
@ENV_OPTION
@pass_context
def promote(ctx: Context, service: str | None, env: str | None) -> None:
    """Pass the canary of SERVICE (default: every one being judged) now, and every later step."""
    from herdsman.facade.canary import decide

    asked = decide(ctx.project(), "promote", service, env)
    console.print(f"asked {', '.join(asked)} to promote; the deploy goes on within a second")


@canary.command(name="abort")
@click.argument("service", required=False)
@ENV_OPTION
@pass_context
def abort(ctx: Context, service: str | None, env: str | None) -> None:
    """Fail the canary of SERVICE (default: every one being judged) now: traffic goes back."""
    from herdsman.facade.canary import decide

    asked = decide(ctx.project(), "abort", service, env)
    console.print(f"asked {', '.join(asked)} to abort; the current release takes all traffic within a second")
