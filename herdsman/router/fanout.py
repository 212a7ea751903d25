"""The pure half of the router's workers (`router/workers.py`): what every worker must hold, and
the one set of counters made of theirs.

With `[router] workers = N` the router's parent holds no listener: N worker processes each run a
`Router` on the same addresses (SO_REUSEPORT) and the parent fans every change out to them. The
parent keeps the configuration in a `Book` (routes and pools, as the state file has them), so a
worker that starts, or starts again after it died, is given all of it in one `load` before it
listens. Backends being drained leave the book when the drain starts: a worker that starts then
never sends them a new request.

Counters are per worker; `merge_stats` sums them per route and backend (requests, errors, 5xx,
timeouts, ejections, latency histograms, in flight; the mean latency weighted by requests; a
backend is ejected if any worker ejected it). A worker that died takes its counters with it, so
the parent keeps its last answer (`departed`) and adds it in: totals never go backwards, which
the agent's rates and the canary's windows rely on.
"""

from __future__ import annotations

import copy
from typing import Any

SUMMED = ("inflight", "requests", "errors", "responses_5xx", "timeouts", "ejections")
KEPT = ("requests", "errors", "responses_5xx", "timeouts", "ejections")  # what outlives a worker


class Book:
    """Routes and pools as the parent was last told: the state file's content, and a new worker's."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, list[dict[str, Any]]] = {}

    def set_routes(self, routes: list[dict[str, Any]], prefix: str = "") -> None:
        """The routes named ``prefix``... become exactly ``routes`` (refused before any change, as
        the router refuses them)."""
        wanted = {str(r["name"]): dict(r) for r in routes}
        for name, spec in wanted.items():
            str(spec["listen"])
            if not float(spec.get("first_byte_timeout", 30.0)) > 0:
                raise ValueError(f"first_byte_timeout of route {name} must be > 0")
        for name in list(self.routes):
            if name.startswith(prefix) and name not in wanted:
                del self.routes[name]
                self.pools.pop(name, None)
        self.routes.update(wanted)

    def set_pool(self, route: str, backends: list[dict[str, Any]]) -> None:
        """The pool of ``route`` becomes ``backends`` (refused before any change, as a worker's
        router refuses them: the book never holds a pool the workers do not)."""
        if route not in self.routes:
            raise KeyError(route)
        for spec in backends:
            int(str(spec["address"]).rpartition(":")[2])
            int(spec.get("weight", 1))
        self.pools[route] = [dict(b) for b in backends]

    def drain(self, route: str, addresses: list[str]) -> None:
        """``addresses`` leave ``route``'s pool (a drain started: no new request goes to them)."""
        gone = set(addresses)
        if route in self.pools:
            self.pools[route] = [b for b in self.pools[route] if str(b["address"]) not in gone]

    def state(self) -> dict[str, Any]:
        """The state file's shape; also what a new worker is given (`load`)."""
        return {
            "routes": copy.deepcopy(list(self.routes.values())),
            "pools": {name: copy.deepcopy(pool) for name, pool in self.pools.items() if name in self.routes},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.routes, self.pools = {}, {}
        self.set_routes(list(state.get("routes", [])))
        for name, backends in dict(state.get("pools", {})).items():
            if name in self.routes:
                self.set_pool(name, list(backends))


def merge_stats(
    parts: list[dict[str, Any]], departed: dict[str, Any] | None = None, routes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One stats answer made of the workers' ``parts``: per route, per backend address, counters
    summed. ``departed`` (dead workers' last counters, see `retire`) adds to the backends the live
    workers report; ``routes`` (the book's) are listed even when no worker answered."""
    out: dict[str, Any] = {}
    for part in parts:
        for name, route in part.items():
            into = out.setdefault(
                name,
                {k: v for k, v in route.items() if k != "backends"} | {"backends": []},
            )
            mine = {b["address"]: b for b in into["backends"]}
            for backend in route.get("backends", []):
                have = mine.get(backend["address"])
                if have is None:
                    have = mine[backend["address"]] = _fresh(backend)
                    into["backends"].append(have)
                _add(have, backend)
    for name, route in (departed or {}).items():
        if name not in out:
            continue
        live = {(b["address"], b["instance"]): b for b in out[name]["backends"]}
        for backend in route.get("backends", []):
            key = (backend["address"], backend.get("instance", ""))
            if key in live:  # the same instance (a later one may have the same address)
                _add(live[key], backend)
    for name, spec in (routes or {}).items():
        if name not in out:
            out[name] = {"listen": spec.get("listen"), "host": spec.get("host"), "backends": []}
    for route in out.values():
        for backend in route["backends"]:
            total = backend.pop("_latency_total")
            backend["mean_latency_ms"] = round(total / backend["requests"], 3) if backend["requests"] else 0
    return out


def retire(departed: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """``departed`` with a dead worker's ``last`` answer added: its cumulative counters only (what
    was in flight on it, its ejections now and its failures in a row ended with it)."""
    kept = merge_stats([departed, _cumulative(last)])
    return _cumulative(kept)


def prune(departed: dict[str, Any], pools: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``departed`` without the backends no pool has any more (they will never be listed again)."""
    out: dict[str, Any] = {}
    for name, route in departed.items():
        pooled = {(str(b["address"]), str(b.get("id", ""))) for b in pools.get(name, [])}
        kept = [b for b in route["backends"] if (b["address"], b.get("instance", "")) in pooled]
        if kept:
            out[name] = {"backends": kept}
    return out


def _cumulative(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, route in stats.items():
        out[name] = {
            "backends": [
                {"address": b["address"], "instance": b.get("instance", "")}
                | {k: b.get(k, 0) for k in KEPT}
                | {
                    "mean_latency_ms": b.get("mean_latency_ms", 0),
                    "latency_hist": dict(b.get("latency_hist", {})),
                }
                for b in route.get("backends", [])
            ]
        }
    return out


def _fresh(backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance": backend.get("instance", ""),
        "address": backend["address"],
        "weight": backend.get("weight", 1),
        **{k: 0 for k in SUMMED},
        "latency_hist": {},
        "failures": 0,
        "ejected": False,
        "ejected_for_s": 0,
        "_latency_total": 0.0,
    }


def _add(into: dict[str, Any], backend: dict[str, Any]) -> None:
    for key in SUMMED:
        into[key] += int(backend.get(key, 0))
    into["_latency_total"] += float(backend.get("mean_latency_ms", 0)) * int(backend.get("requests", 0))
    hist = into["latency_hist"]
    for bucket, count in dict(backend.get("latency_hist", {})).items():
        hist[bucket] = hist.get(bucket, 0) + int(count)
    into["failures"] = max(into["failures"], int(backend.get("failures", 0)))
    into["ejected"] = bool(into["ejected"] or backend.get("ejected", False))
    into["ejected_for_s"] = max(into["ejected_for_s"], backend.get("ejected_for_s", 0))
