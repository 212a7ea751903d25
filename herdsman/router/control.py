"""The router process: its control socket, and its state file so a restarted router resumes serving.

Control protocol: JSON lines over a unix socket (mode 0600), one request, one reply per line:

    {"op": "ping"}                                              -> {"ok": true, "pid": N}
    {"op": "set_routes", "prefix": "ENV/",
     "routes": [{"name", "listen", "host", "drain_timeout", "first_byte_timeout"}]}
    {"op": "set_pool", "route": NAME, "backends": [{"id", "address", "weight"}], "interim": BOOL}
    {"op": "drain", "route": NAME, "addresses": [...], "timeout": SECONDS, "hung": BOOL}   (replies when done)
    {"op": "stats"}                                             -> {"ok": true, "stats": {...}}
    {"op": "load", "state": {"routes": [...], "pools": {...}}}  (all of it, pools set before listening)

With `[router] workers = N` (N > 1) the same protocol is served by the parent of N worker
processes (`router/workers.py`), which fans each change out and answers once every worker has
applied it; each worker serves it too, on a private socket of its own, for the parent only.

Stats per backend: instance, address, weight, inflight, requests, errors, mean_latency_ms, and
for outlier ejection (`router/outlier.py`): timeouts (requests that waited past the first-byte
timeout, for a connection or a first byte), failures (in a row), ejected (out of rotation now),
ejections (times taken out), ejected_for_s (cool-off left).

Errors reply {"ok": false, "error": "..."}. Routes and pools are written to the state file
(atomically) and loaded at start, every change written before it is answered, but for a pool
change marked `"interim": true` (a burst's, which sets a 1,000-backend pool several times a
second: writing each was a third of the router's CPU): that one is written at once only if the
file is older than SAVE_EVERY, else SAVE_EVERY after the last write, with every change since. The
burst's last change is not interim, so a router restarted from its file never lacks more than a
burst's last moment, and the burst's next change (within SAVE_EVERY) sets the whole pool again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Protocol

from herdsman.router.proxy import Router
from herdsman.router.wire import LINE_LIMIT

SAVE_EVERY = 0.25  # seconds: pool changes closer than this are written together


class Plane(Protocol):
    """What the control socket drives: one router in this process, or the workers' parent."""

    def has_route(self, name: str) -> bool: ...
    async def set_routes(self, routes: list[dict[str, Any]], prefix: str) -> None: ...
    async def set_pool(self, route: str, backends: list[dict[str, Any]]) -> None: ...
    async def drain(self, route: str, addresses: list[str], timeout: float, hung: bool) -> dict[str, int]: ...
    async def stats(self) -> dict[str, Any]: ...
    async def load(self, state: dict[str, Any]) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...
    def ping(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class InProcess:
    """The plane of a single-process router (`workers = 1`), and of each worker."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def has_route(self, name: str) -> bool:
        return name in self.router.routes

    async def set_routes(self, routes: list[dict[str, Any]], prefix: str) -> None:
        await self.router.set_routes(routes, prefix)

    async def set_pool(self, route: str, backends: list[dict[str, Any]]) -> None:
        self.router.set_pool(route, backends)

    async def drain(self, route: str, addresses: list[str], timeout: float, hung: bool) -> dict[str, int]:
        return await self.router.drain(route, addresses, timeout, hung)

    async def stats(self) -> dict[str, Any]:
        return self.router.stats()

    async def load(self, state: dict[str, Any]) -> None:
        await self.router.load(state)

    def snapshot(self) -> dict[str, Any]:
        return self.router.snapshot()

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def close(self) -> None:
        self.router.close()


class ControlServer:
    """The control socket. ``state_path`` None: a worker's (its parent keeps the state file)."""

    def __init__(self, plane: Plane, socket_path: Path, state_path: Path | None) -> None:
        self.plane = plane
        self.socket_path = socket_path
        self.state_path = state_path
        self._saved_at = float("-inf")  # monotonic time of the last write of the state file
        self._pending: asyncio.TimerHandle | None = None  # a write of changes made since

    async def load_state(self) -> None:
        if self.state_path is None:
            return  # a worker: its parent gives it everything in a `load`
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        await self.plane.load(state)  # also with nothing to load: a parent starts its workers here

    def save_state(self, at_once: bool = True) -> None:
        """Write the state file now (``at_once``, or the last write is SAVE_EVERY old), else once
        SAVE_EVERY has passed since the last write."""
        if self.state_path is None:
            return
        wait = self._saved_at + SAVE_EVERY - time.monotonic()
        if at_once or wait <= 0:
            self._write()
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(wait, self._write)

    def flush(self) -> None:
        """Write the changes not yet written, if any."""
        if self._pending is not None:
            self._write()

    def _write(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        assert self.state_path is not None
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps(self.plane.snapshot(), separators=(",", ":")))
        os.replace(tmp, self.state_path)
        self._saved_at = time.monotonic()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, **self.plane.ping()}
        if op == "set_routes":
            await self.plane.set_routes(list(request["routes"]), str(request.get("prefix", "")))
            self.save_state()
            return {"ok": True}
        if op == "set_pool":
            if not self.plane.has_route(str(request["route"])):
                return {"ok": False, "error": f"no route {request['route']!r}"}
            await self.plane.set_pool(str(request["route"]), list(request["backends"]))
            self.save_state(at_once=not request.get("interim"))
            return {"ok": True}
        if op == "drain":
            result = await self.plane.drain(
                str(request["route"]),
                list(request["addresses"]),
                float(request["timeout"]),
                bool(request.get("hung", False)),
            )
            self.save_state()  # at once, with any pool change not yet written
            return {"ok": True, **result}
        if op == "stats":
            return {"ok": True, "stats": await self.plane.stats()}
        if op == "load":
            await self.plane.load(dict(request["state"]))
            self.save_state()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.handle(json.loads(line))
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def serve(self, parent: int | None = None) -> None:
        """Serve until SIGTERM or SIGINT; a worker (``parent`` given) also stops when its parent
        is gone (it would otherwise keep serving pools nobody updates)."""
        await self.load_state()
        self.socket_path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._connection, path=str(self.socket_path), limit=LINE_LIMIT
            )
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        orphan = loop.create_task(_orphaned(parent, stop)) if parent is not None else None
        async with server:
            await stop.wait()
        if orphan is not None:
            orphan.cancel()
        self.flush()
        await self.plane.close()
        self.socket_path.unlink(missing_ok=True)


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    stop.set()
