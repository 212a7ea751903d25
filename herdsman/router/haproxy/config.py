"""The haproxy.cfg of a set of routes: a pure function, so tests assert on the text itself.

One frontend per listen address; routes sharing an address are told apart by the Host header
(`use_backend`), a route without a host is the frontend's default. One backend per route, with
`balance roundrobin`, no health checks (herdsman admits and ejects instances itself), and the
embedded router's retry rules: a connection failure is retried on another server for any method
(nothing was sent), an empty response or a first-byte timeout only for idempotent methods
(`disable-l7-retry` for the others). Servers are added at runtime (`commands.py`); the pools
known when the file is written are in it, so a reload (routes changed) never empties a pool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IDEMPOTENT_METHODS = "GET HEAD OPTIONS PUT DELETE TRACE"
RETRIES = 3
CONNECT_TIMEOUT_MS = 5000  # at most: a route's first-byte timeout may be shorter
MAX_WEIGHT = 256  # HAProxy's ceiling for a server weight
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True)
class Paths:
    """Where the process keeps its runtime socket and pid file (under `.herd/run/`)."""

    socket: str
    pidfile: str


def backend_name(route: str) -> str:
    """A route's name (``ENV/SERVICE``) as a backend name (HAProxy allows no ``/``)."""
    return "r_" + _UNSAFE.sub("_", route.replace("/", "__"))


def server_name(instance: str, address: str) -> str:
    """An instance's server name: its id, or its address when it has none."""
    return _UNSAFE.sub("_", instance) if instance else "a_" + _UNSAFE.sub("_", address)


def weight_of(weight: int) -> int:
    return max(1, min(MAX_WEIGHT, int(weight)))


def bind_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    return f"{host.strip('[]')}:{port}"


def _ms(seconds: float) -> int:
    return max(1, round(float(seconds) * 1000))


def haproxy_config(
    routes: Sequence[Mapping[str, Any]],
    pools: Mapping[str, Sequence[Mapping[str, Any]]],
    paths: Paths,
) -> str:
    """The whole configuration for ``routes`` (dicts as `router.client.routes_of` makes them) with
    the servers of ``pools`` (route name -> [{"id", "address", "weight"}])."""
    ordered = sorted(routes, key=lambda r: str(r["name"]))
    longest_drain = max((float(r.get("drain_timeout", 30.0)) for r in ordered), default=30.0)
    lines = [
        "# written by herdsman: changes here are lost at the next reload",
        "global",
        "    master-worker",
        f"    pidfile {paths.pidfile}",
        f"    stats socket {paths.socket} mode 600 level admin expose-fd listeners",
        # an old worker left by a reload finishes its requests, then goes
        f"    hard-stop-after {_ms(longest_drain) + 5000}ms",
        "",
        "defaults",
        "    mode http",
        "    timeout client 60s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 5s",
        "    timeout connect 5s",
        "    timeout server 30s",
        "",
    ]
    by_listen: dict[str, list[Mapping[str, Any]]] = {}
    for route in ordered:
        by_listen.setdefault(str(route["listen"]), []).append(route)
    for index, (listen, sharing) in enumerate(sorted(by_listen.items())):
        lines += [f"frontend f{index}", f"    bind {bind_address(listen)}"]
        default = None
        for route in sharing:
            if route.get("host"):
                host = str(route["host"]).lower()
                lines.append(
                    f"    use_backend {backend_name(str(route['name']))}"
                    f" if {{ req.hdr(host),field(1,:),lower -m str {host} }}"
                )
            else:
                default = route
        if default is not None:
            lines.append(f"    default_backend {backend_name(str(default['name']))}")
        lines.append("")
    for route in ordered:
        name = str(route["name"])
        first_byte = float(route.get("first_byte_timeout", 30.0))
        lines += [
            f"backend {backend_name(name)}",
            "    balance roundrobin",
            f"    timeout connect {min(CONNECT_TIMEOUT_MS, _ms(first_byte))}ms",
            f"    timeout server {_ms(first_byte)}ms",
            f"    retries {RETRIES}",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response response-timeout",
            f"    http-request disable-l7-retry unless {{ method {IDEMPOTENT_METHODS} }}",
        ]
        for server in pools.get(name, ()):
            address = bind_address(str(server["address"]))
            lines.append(
                f"    server {server_name(str(server.get('id', '')), address)} {address}"
                f" weight {weight_of(int(server.get('weight', 1)))}"
            )
        lines.append("")
    return "\n".join(lines)
