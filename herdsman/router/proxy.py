"""The embedded router's configuration: listeners, routes, pools with weights, draining, counters.

The control socket (`router/control.py`) changes these; the data plane (`router/inbound.py`,
`exchange.py`, `upstream.py`) reads them per request. A backend is chosen per request (smooth
weighted round robin over the backends neither draining nor ejected), and a pool is replaced in one
assignment, so a switch is atomic for every later request. Draining: a backend leaves the pool at
once, requests in flight on it finish, and those still running when the drain timeout passes are
cut (with a 504 if their response had not started).

A hung backend must not hold requests (nor a drain) for long: a watchdog ticking every
``TICK`` ends each request whose backend has not sent a first byte within the route's
``first_byte_timeout`` (`Exchange.overdue`), and brings ejected backends back when their cool-off
ends. Failures in a row take a backend out of rotation (`router/outlier.py`); the last backend
of a pool not ejected is never taken out, and if all are ejected anyway they are all used.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import traceback
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from herdsman.router import latency
from herdsman.router.exchange import Exchange
from herdsman.router.inbound import ClientConnection
from herdsman.router.outlier import Outlier
from herdsman.router.upstream import UpstreamConnection

TICK = 0.05  # seconds between the watchdog's looks at first-byte deadlines and cool-offs


@dataclass
class Backend:
    instance: str
    host: str
    port: int
    weight: int = 1
    current: int = 0  # smooth weighted round robin state
    inflight: int = 0
    requests: int = 0
    errors: int = 0
    latency_total: float = 0.0
    latency_hist: list[int] = field(default_factory=latency.empty)  # see router/latency.py
    responses_5xx: int = 0  # answers with a 5xx status (errors counts what never got an answer)
    draining: bool = False
    ejected: bool = False  # out of rotation for a cool-off (mirrors outlier.ejected, read per request)
    timeouts: int = 0  # requests it let wait past the first-byte timeout (no connection or no byte)
    outlier: Outlier = field(default_factory=Outlier)
    idle: list[UpstreamConnection] = field(default_factory=list)  # kept-alive, ready for a request
    exchanges: set[Exchange] = field(default_factory=set)  # requests in flight on this backend

    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = f"{self.host}:{self.port}"

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for upstream in idle:
            upstream.close()


class Route:
    """One route and its pool. The per-request choice walks a rotation built when the pool
    changes (a new pool, a backend draining, ejected or back): each backend in rotation appears in
    it as often as its weight (divided by the weights' common divisor), spread evenly, so a choice
    is one index however many backends the pool has, and weights are exact over each turn."""

    def __init__(
        self,
        name: str,
        listen: str,
        host: str | None = None,
        drain_timeout: float = 30.0,
        first_byte_timeout: float = 30.0,
        backends: list[Backend] | None = None,
    ) -> None:
        self.name, self.listen, self.host = name, listen, host
        self.drain_timeout, self.first_byte_timeout = drain_timeout, first_byte_timeout
        self.ejected = 0  # backends of this pool out of rotation
        self._backends: list[Backend] = backends or []
        self._rotation: list[Backend] | None = None  # None: build it at the next choice
        self._cursor = 0

    @property
    def backends(self) -> list[Backend]:
        return self._backends

    @backends.setter
    def backends(self, backends: list[Backend]) -> None:
        self._backends = backends  # one assignment: the switch is atomic for every later request
        self._rotation = None

    def changed(self) -> None:
        """A backend's draining, ejection or weight changed: build the rotation again."""
        self._rotation = None

    def choose(self, exclude: AbstractSet[str]) -> Backend | None:
        backends = self._backends
        if len(backends) == 1 and not exclude:  # the common case, without the arithmetic
            return None if backends[0].draining else backends[0]
        rotation = self._rotation
        if rotation is None:
            rotation = self._rotation = rotation_of(backends, bool(self.ejected))
        if not rotation:
            return None
        size = len(rotation)
        if not exclude:
            backend = rotation[self._cursor % size]
            self._cursor += 1
            return backend
        for offset in range(size):  # a retry: the next one not tried yet, outside the rotation
            backend = rotation[(self._cursor + offset) % size]  # (a retry takes no turn: the
            if backend.address not in exclude:  # weights stay exact for first choices)
                return backend
        return None

    def failed(self, backend: Backend, now: float) -> None:
        """A request failed on ``backend`` (no first byte in time, no connection): maybe eject it."""
        if backend.draining or not any(b is backend for b in self.backends):
            return  # out of the pool already
        others = any(b is not backend and not b.draining and not b.ejected for b in self.backends)
        if backend.outlier.failed(now, may_eject=others):
            backend.ejected = True
            backend.close_idle()
            self.ejected += 1
            self.changed()

    def comeback(self, now: float) -> None:
        """Ejected backends whose cool-off is over go back into rotation (on probation)."""
        for backend in self.backends:
            if backend.ejected and backend.outlier.comes_back(now):
                backend.ejected = False
                self.changed()
        self.ejected = sum(b.ejected for b in self.backends)


MAX_TURN = 1 << 16  # entries of one rotation at most (weights are scaled down beyond)


def rotation_of(backends: list[Backend], ejections: bool) -> list[Backend]:
    """The order in which a pool's backends take requests, one turn of it: the backends neither
    draining nor ejected (all those not draining when every one is ejected: a pool never empties
    by ejection), each ``weight / gcd`` times, at even spacing (its k-th place at (k + 1/2) / w of
    the turn), in pool order among equals: with equal weights, plain round robin."""
    candidates = [b for b in backends if not b.draining]
    if ejections and any(not b.ejected for b in candidates):
        candidates = [b for b in candidates if not b.ejected]
    weights = [b.weight for b in candidates]
    if not candidates or min(weights) == max(weights):
        return candidates
    divisor = functools.reduce(math.gcd, weights)
    weights = [w // divisor for w in weights]
    total = sum(weights)
    if total > MAX_TURN:  # a turn too long to build: the same proportions, roughly
        weights = [max(1, w * MAX_TURN // total) for w in weights]
    places = sorted(((k + 0.5) / w, index) for index, w in enumerate(weights) for k in range(w))
    return [candidates[index] for _, index in places]


class Router:
    def __init__(self, *, reuse_port: bool = False) -> None:
        self.reuse_port = reuse_port  # a worker: its listeners share their addresses (router/workers.py)
        self.routes: dict[str, Route] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.retired: dict[str, Backend] = {}  # draining backends no longer in any pool
        self.listeners: dict[str, tuple[dict[str, Route], Route | None]] = {}  # by listen address
        self.version = 0  # changes with the routes: a client connection's route for a Host is kept until then
        self.watchdog: asyncio.Task[None] | None = None

    # configuration ------------------------------------------------------------------------------
    async def load(self, state: dict[str, Any]) -> None:
        """Routes and pools (the state file's shape) set before any listener opens: a router that
        starts (or a worker that starts again) never answers 503 for want of its pool."""
        await self.set_routes(list(state.get("routes", [])), bind=False)
        for name, backends in dict(state.get("pools", {})).items():
            if name in self.routes:
                self.set_pool(name, list(backends))
        await self.listen()

    def snapshot(self) -> dict[str, Any]:
        """Routes and pools, as the state file keeps them."""
        routes = [
            {
                "name": r.name,
                "listen": r.listen,
                "host": r.host,
                "drain_timeout": r.drain_timeout,
                "first_byte_timeout": r.first_byte_timeout,
            }
            for r in self.routes.values()
        ]
        pools = {
            r.name: [{"id": b.instance, "address": b.address, "weight": b.weight} for b in r.backends]
            for r in self.routes.values()
        }
        return {"routes": routes, "pools": pools}

    async def set_routes(
        self, routes: list[dict[str, object]], prefix: str = "", *, bind: bool = True
    ) -> None:
        """Make the routes whose names start with ``prefix`` (one environment's) exactly ``routes``."""
        wanted = {str(r["name"]): r for r in routes}
        for name, spec in wanted.items():  # refused before anything changes
            if not float(spec.get("first_byte_timeout", 30.0)) > 0:  # type: ignore[arg-type]
                raise ValueError(f"first_byte_timeout of route {name} must be > 0")
        for name in list(self.routes):
            if name.startswith(prefix) and name not in wanted:
                del self.routes[name]
        for name, spec in wanted.items():
            route = self.routes.get(name)
            listen, host = str(spec["listen"]), spec.get("host")
            timeout = float(spec.get("drain_timeout", 30.0))  # type: ignore[arg-type]
            first_byte = float(spec.get("first_byte_timeout", 30.0))  # type: ignore[arg-type]
            if route is None:
                route = self.routes[name] = Route(name, listen)
            route.listen, route.host = listen, str(host).lower() if host else None
            route.drain_timeout, route.first_byte_timeout = timeout, first_byte
        self._index_listeners()
        if self.watchdog is None:
            self.watchdog = asyncio.get_running_loop().create_task(self.watch())
        if bind:
            await self.listen()

    async def listen(self) -> None:
        """Open the listeners the routes need, close those no route uses."""
        needed = {r.listen for r in self.routes.values()}
        for address in list(self.servers):
            if address not in needed:
                self.servers.pop(address).close()
        for address in needed - set(self.servers):
            host, _, port = address.rpartition(":")
            loop = asyncio.get_running_loop()
            self.servers[address] = await loop.create_server(
                functools.partial(ClientConnection, self, address),
                host.strip("[]"),
                int(port),
                backlog=1024,
                reuse_port=self.reuse_port or None,
            )

    def set_pool(self, route_name: str, backends: list[dict[str, object]]) -> None:
        route = self.routes[route_name]
        old = {b.address: b for b in route.backends}
        new: list[Backend] = []
        for spec in backends:
            host, _, port = str(spec["address"]).rpartition(":")
            backend = old.pop(f"{host}:{port}", None) or self.retired.pop(f"{host}:{port}", None)
            if backend is None:
                backend = Backend(str(spec.get("id", "")), host, int(port))
            backend.weight = max(1, int(spec.get("weight", 1)))  # type: ignore[call-overload]
            backend.draining = False
            new.append(backend)
        route.backends = new  # one assignment: the switch is atomic for every later request
        route.ejected = sum(b.ejected for b in new)
        for backend in old.values():  # left the pool: in-flight requests finish, idle sockets close
            backend.draining = True
            backend.close_idle()
            self.retired[backend.address] = backend

    async def drain(
        self, route_name: str, addresses: list[str], timeout: float, hung: bool = False
    ) -> dict[str, int]:
        """Wait until the backends have nothing in flight; cut what still runs after ``timeout``.
        With ``hung`` (backends that failed their health checks) requests still waiting for a first
        byte are ended at once (`Exchange.unanswered`): they would only wait out the timeout."""
        route = self.routes.get(route_name)
        draining = [b for b in (route.backends if route else []) if b.address in addresses]
        draining += [self.retired[a] for a in addresses if a in self.retired]
        for backend in draining:
            backend.draining = True
        if route is not None:
            route.changed()
        if hung:
            now = time.monotonic()
            for backend in draining:
                for exchange in list(backend.exchanges):
                    exchange.unanswered(now)
        deadline = time.monotonic() + timeout
        while any(b.inflight for b in draining) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cut = 0
        for backend in draining:
            for exchange in list(backend.exchanges):
                exchange.cut()
                cut += 1
            backend.close_idle()
            self.retired.pop(backend.address, None)
        if route is not None:
            route.backends = [b for b in route.backends if b.address not in addresses]
            route.ejected = sum(b.ejected for b in route.backends)
        return {"cut": cut}

    async def watch(self) -> None:
        """The watchdog: first-byte deadlines of requests in flight, and cool-offs that end."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for route in list(self.routes.values()):
                if route.ejected:
                    route.comeback(now)
                for backend in route.backends:
                    if backend.exchanges:
                        self._overdue(backend, now)
            for backend in list(self.retired.values()):
                self._overdue(backend, now)

    @staticmethod
    def _overdue(backend: Backend, now: float) -> None:
        for exchange in list(backend.exchanges):
            try:
                exchange.overdue(now)
            except Exception:  # one request's bug must not stop the watchdog of all
                traceback.print_exc()

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {}
        now = time.monotonic()
        for name, route in self.routes.items():
            out[name] = {
                "listen": route.listen,
                "host": route.host,
                "latency_bounds_ms": latency.LATENCY_BOUNDS_MS,
                "backends": [
                    {
                        "instance": b.instance,
                        "address": b.address,
                        "weight": b.weight,
                        "inflight": b.inflight,
                        "requests": b.requests,
                        "errors": b.errors,
                        "mean_latency_ms": round(1000 * b.latency_total / b.requests, 3) if b.requests else 0,
                        "responses_5xx": b.responses_5xx,
                        # sparse: bucket index -> count (JSON keys are strings)
                        "latency_hist": {str(i): n for i, n in enumerate(b.latency_hist) if n},
                        "timeouts": b.timeouts,
                        "failures": b.outlier.failures,
                        "ejected": b.ejected,
                        "ejections": b.outlier.ejections,
                        "ejected_for_s": round(b.outlier.remaining(now), 3),
                    }
                    for b in route.backends
                ],
            }
        return out

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        for server in self.servers.values():
            server.close()

    def route_for(self, address: str, host: bytes | None) -> Route | None:
        """The route of a request: its listener's route for its Host, else the one with no host."""
        entry = self.listeners.get(address)
        if entry is None:
            return None
        hosts, fallback = entry
        if hosts and host is not None:
            name = host.decode("latin-1").lower()
            if not name.endswith("]"):
                name = name.rsplit(":", 1)[0]
            return hosts.get(name, fallback)
        return fallback

    def _index_listeners(self) -> None:
        listeners: dict[str, tuple[dict[str, Route], Route | None]] = {}
        for route in self.routes.values():
            hosts, fallback = listeners.get(route.listen, ({}, None))
            if route.host is None:
                fallback = route
            else:
                hosts[route.host] = route
            listeners[route.listen] = (hosts, fallback)
        self.listeners = listeners
        self.version += 1
