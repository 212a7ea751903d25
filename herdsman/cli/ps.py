"""`herd ps`: the instances, in plain columns — a command people run in a loop, so it starts light.

No rich here (a Table measured every cell: 1.4 s of CPU at 1,000 instances; rich's console alone
costs ~50 ms to import), and the facade's `glance` answers from the agent without loading the
models, httpx or the deploy code. `tests/integration/test_ps.py` holds the imports to that.
"""

from __future__ import annotations

import os
import time

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import columns, short


@click.command()
@click.option("-e", "--env", "env", help="The environment (default: [stack] environment, production).")
@pass_context
def ps(ctx: Context, env: str | None) -> None:
    """The instances of the environment: service, release, image, state, health, uptime, address
    (and the node each runs on, on a multi-node driver).

    Health is the agent's last liveness check of each instance when an agent runs, else a probe
    made now with the check of the instance's release."""
    from herdsman.facade.glance import instances

    found = instances(ctx.file, env, driver_name=ctx.driver)
    nodes = any(item.node for item in found.rows)  # a node column only where there are nodes
    rows = [["instance", "service", "release", "image", "state", "health", "uptime", "address"]]
    rows[0] += ["node"] if nodes else []
    now = time.time()
    for item in found.rows:
        uptime = f"{now - item.started:.0f}s" if item.state == "running" else "-"
        state = item.state if not item.detail else f"{item.state} ({item.detail})"
        row = [item.id, item.service, str(item.release), short(item.image), state, item.health, uptime]
        row.append(item.address)
        if nodes:
            row.append(item.node + (f" (evicted: {item.evicted})" if item.evicted else ""))
        rows.append(row)
    color = False if os.environ.get("NO_COLOR") else None  # None: colour on a terminal only
    lines = [columns(rows)]
    for service, (count, mode) in sorted(found.scales.items()):
        who = "herd scale" if mode == "fixed" else "the autoscaler"
        lines.append(f"{service}: {count} replica(s), set by {who}")
    for service, note in sorted(found.notes.items()):
        lines.append(f"{click.style(service, fg='yellow')}: {note}")
    if found.health_by_agent:
        lines.append(click.style("health: the agent's last liveness checks", dim=True))
    click.echo("\n".join(lines), color=color)
