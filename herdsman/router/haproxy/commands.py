"""Runtime API commands for a pool change, a drain and a removal: pure, so tests read the lists.

A pool change never reloads HAProxy: new servers are added (a dynamic server starts in
maintenance) and made ready first, weights are changed, and only then are the servers that left
the pool set to `drain` (no new request; requests in flight finish), so at no moment is a pool
empty when both the old and the new pool have members. Removal after a drain: HAProxy 2.6
deletes only a server in maintenance (`set server ... state maint`, then `del server`); going to
maintenance closes its idle connections, so the delete is not refused for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from herdsman.router.haproxy.config import bind_address, server_name, weight_of

# A dynamic server inherits nothing: on 2.6 it keeps no idle connection (pool-max-conn 0, purge
# delay 0), so every request would open a new connection to the instance (measured: a third of
# the throughput of a server from the config file). These are the config file's defaults.
DYNAMIC_SERVER_OPTIONS = "pool-max-conn -1 pool-purge-delay 5s"


@dataclass(frozen=True)
class Server:
    """A server as HAProxy has it (from `show stat`) or as a pool wants it."""

    name: str
    address: str
    weight: int = 1
    state: str = "ready"  # ready | drain | maint


def wanted_servers(backends: Sequence[tuple[str, str, int]]) -> list[Server]:
    """The executor's (instance id, address, weight) backends as servers."""
    return [
        Server(server_name(instance, bind_address(address)), bind_address(address), weight_of(weight))
        for instance, address, weight in backends
    ]


def pool_commands(backend: str, current: Mapping[str, Server], wanted: Sequence[Server]) -> list[str]:
    """Commands that turn the servers ``current`` of ``backend`` into the pool ``wanted``."""
    first: list[str] = []
    for server in wanted:
        have = current.get(server.name)
        where = f"{backend}/{server.name}"
        if have is None:
            first += [
                f"add server {where} {server.address} weight {server.weight} {DYNAMIC_SERVER_OPTIONS}",
                f"set server {where} state ready",
            ]
            continue
        if have.address != server.address:
            host, _, port = server.address.rpartition(":")
            first.append(f"set server {where} addr {host} port {port}")
        if have.weight != server.weight:
            first.append(f"set server {where} weight {server.weight}")
        if have.state != "ready":
            first.append(f"set server {where} state ready")
    names = {s.name for s in wanted}
    leaving = [
        f"set server {backend}/{name} state drain"
        for name, have in sorted(current.items())
        if name not in names and have.state == "ready"
    ]
    return first + leaving


def drain_commands(backend: str, names: Sequence[str]) -> list[str]:
    return [f"set server {backend}/{name} state drain" for name in names]


def remove_commands(backend: str, names: Sequence[str], *, cut: bool = False) -> list[str]:
    """Take servers out for good; with ``cut``, end the requests they still serve first."""
    out: list[str] = []
    for name in names:
        if cut:
            out.append(f"shutdown sessions server {backend}/{name}")
        out += [f"set server {backend}/{name} state maint", f"del server {backend}/{name}"]
    return out
