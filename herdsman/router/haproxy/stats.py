"""`show stat` CSV -> the embedded router's `stats` shape, so the autoscaler and `/metrics` read
either engine the same way (`agent/autoscale.py` `sample_of`, `agent/metrics.py` `RouterTotals`).

Per server: inflight = `scur`, requests = `req_tot`, errors = `hrsp_5xx` + `econ` (5xx answers and
connections that failed), mean_latency_ms = `ttime` (HAProxy's mean over the last 1024 requests).
Servers draining or in maintenance have left the pool and are not listed, as in the embedded router.
The outlier fields are the embedded router's own; HAProxy has none here (health is herdsman's).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from herdsman.router.haproxy.commands import Server
from herdsman.router.haproxy.config import backend_name


def rows(csv_text: str) -> list[dict[str, str]]:
    """The rows of `show stat` as dicts by column name."""
    text = csv_text.lstrip("# ")
    return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("svname")]


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def state_of(status: str) -> str:
    status = status.upper()
    if status.startswith("DRAIN"):
        return "drain"
    if status.startswith("MAINT"):
        return "maint"
    return "ready"


def servers_by_backend(table: list[dict[str, str]]) -> dict[str, dict[str, Server]]:
    """What HAProxy has now: per backend, its servers by name."""
    out: dict[str, dict[str, Server]] = {}
    for row in table:
        if row["svname"] in ("FRONTEND", "BACKEND"):
            if row["svname"] == "BACKEND":
                out.setdefault(row["pxname"], {})
            continue
        out.setdefault(row["pxname"], {})[row["svname"]] = Server(
            row["svname"], row.get("addr", ""), _int(row.get("weight")), state_of(row.get("status", ""))
        )
    return out


def router_stats(
    table: list[dict[str, str]],
    routes: Sequence[Mapping[str, Any]],
    instances: Mapping[str, str],
) -> dict[str, object]:
    """Per route: listen, host and its backends with their counters. ``instances`` maps a server
    name back to the instance id it was added for."""
    servers: dict[str, list[dict[str, str]]] = {}
    for row in table:
        if row["svname"] not in ("FRONTEND", "BACKEND"):
            servers.setdefault(row["pxname"], []).append(row)
    out: dict[str, object] = {}
    for route in routes:
        name = str(route["name"])
        backends = []
        for row in servers.get(backend_name(name), []):
            if state_of(row.get("status", "")) != "ready":
                continue
            backends.append(
                {
                    "instance": instances.get(row["svname"], row["svname"]),
                    "address": row.get("addr", ""),
                    "weight": _int(row.get("weight")),
                    "inflight": _int(row.get("scur")),
                    "requests": _int(row.get("req_tot")),
                    "errors": _int(row.get("hrsp_5xx")) + _int(row.get("econ")),
                    "mean_latency_ms": float(_int(row.get("ttime"))),
                    "timeouts": 0,
                    "failures": 0,
                    "ejected": False,
                    "ejections": 0,
                    "ejected_for_s": 0.0,
                }
            )
        out[name] = {"listen": route["listen"], "host": route.get("host"), "backends": backends}
    return out
