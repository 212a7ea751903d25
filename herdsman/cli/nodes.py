"""`herd node ls | drain | activate`: the nodes of a Swarm environment."""

from __future__ import annotations

import click

from herdsman.cli.app import Context, pass_context
from herdsman.cli.fmt import columns
from herdsman.cli.out import console

ENV_OPTION = click.option("-e", "--env", "env", help="The environment (default: [stack] environment).")


@click.group()
def node() -> None:
    """The nodes of a Swarm environment (driver = "swarm"), and taking one out of service.

    \b
    herd node ls              each node: role, availability, state, address, instances here
    herd node drain NODE      move this environment's instances off NODE, then drain it in Swarm
    herd node activate NODE   take NODE back into service

    Prefer `herd node drain` to `docker node update --availability drain`: Swarm stops a drained
    node's tasks at once, before anything replaced them; herdsman's agent first starts each
    replacement on another node and admits it, then switches the pool, then stops the old one.
    NODE is a node id, an id prefix or a hostname.
    """


@node.command(name="ls")
@ENV_OPTION
@pass_context
def ls(ctx: Context, env: str | None) -> None:
    """The swarm's nodes, with how many instances of the environment each runs."""
    from herdsman.facade.nodes import nodes

    rows = [["id", "hostname", "role", "availability", "state", "address", "instances"]]
    for n in nodes(ctx.project(), env, driver_name=ctx.driver):
        availability = n.availability + (" (leaving: herd node drain)" if n.leaving else "")
        rows.append([n.id[:12], n.hostname, n.role, availability, n.state, n.addr, str(n.instances)])
    console.print(columns(rows), highlight=False, markup=False, soft_wrap=True)


@node.command(name="drain")
@click.argument("ref", metavar="NODE")
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for the moves."
)
@ENV_OPTION
@pass_context
def drain(ctx: Context, ref: str, timeout: float, env: str | None) -> None:
    """Move the environment's instances off NODE with no failed request, then drain it in Swarm."""
    from herdsman.facade.nodes import drain_node

    done = drain_node(
        ctx.project(),
        ref,
        env,
        driver_name=ctx.driver,
        timeout=timeout,
        on_progress=lambda line: console.print(f"· {line}", highlight=False),
    )
    console.print(f"node {done.node} drained: {len(done.moved)} instance(s) moved", highlight=False)
    if done.others:
        console.print(
            f"[yellow]{done.others} instance(s) of other environments or stacks were on it:"
            " Swarm stops them[/]"
        )


@node.command(name="activate")
@click.argument("ref", metavar="NODE")
@ENV_OPTION
@pass_context
def activate(ctx: Context, ref: str, env: str | None) -> None:
    """Take NODE back into service (new instances may be placed on it again)."""
    from herdsman.facade.nodes import activate_node

    console.print(f"node {activate_node(ctx.project(), ref, env, driver_name=ctx.driver)} is active")
