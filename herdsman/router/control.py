"""The router process: its control socket, and its state file so a restarted router resumes serving.

Control protocol: JSON lines over a unix socket (mode 0600), one request, one reply per line:

    {"op": "ping"}                                              -> {"ok": true, "pid": N}
    {"op": "set_routes", "prefix": "ENV/",
     "routes": [{"name", "listen", "host", "drain_timeout", "first_byte_timeout"}]}
    {"op": "set_pool", "route": NAME, "backends": [{"id", "address", "weight"}]}
    {"op": "drain", "route": NAME, "addresses": [...], "timeout": SECONDS, "hung": BOOL}   (replies when done)
    {"op": "stats"}                                             -> {"ok": true, "stats": {...}}

Stats per backend: instance, address, weight, inflight, requests, errors, mean_latency_ms, and
for outlier ejection (`router/outlier.py`): timeouts (requests that waited past the first-byte
timeout, for a connection or a first byte), failures (in a row), ejected (out of rotation now),
ejections (times taken out), ejected_for_s (cool-off left).

Errors reply {"ok": false, "error": "..."}. Routes and pools are written to the state file
(atomically) after every change and loaded at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from herdsman.router.proxy import Router
from herdsman.router.wire import LINE_LIMIT


class ControlServer:
    def __init__(self, router: Router, socket_path: Path, state_path: Path) -> None:
        self.router = router
        self.socket_path = socket_path
        self.state_path = state_path

    async def load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        await self.router.set_routes(state.get("routes", []))
        for name, backends in state.get("pools", {}).items():
            if name in self.router.routes:
                self.router.set_pool(name, backends)

    def save_state(self) -> None:
        routes = [
            {
                "name": r.name,
                "listen": r.listen,
                "host": r.host,
                "drain_timeout": r.drain_timeout,
                "first_byte_timeout": r.first_byte_timeout,
            }
            for r in self.router.routes.values()
        ]
        pools = {
            r.name: [{"id": b.instance, "address": b.address, "weight": b.weight} for b in r.backends]
            for r in self.router.routes.values()
        }
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps({"routes": routes, "pools": pools}, indent=1))
        os.replace(tmp, self.state_path)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "set_routes":
            await self.router.set_routes(list(request["routes"]), str(request.get("prefix", "")))
            self.save_state()
            return {"ok": True}
        if op == "set_pool":
            if request["route"] not in self.router.routes:
                return {"ok": False, "error": f"no route {request['route']!r}"}
            self.router.set_pool(str(request["route"]), list(request["backends"]))
            self.save_state()
            return {"ok": True}
        if op == "drain":
            result = await self.router.drain(
                str(request["route"]),
                list(request["addresses"]),
                float(request["timeout"]),
                bool(request.get("hung", False)),
            )
            self.save_state()
            return {"ok": True, **result}
        if op == "stats":
            return {"ok": True, "stats": self.router.stats()}
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

    async def serve(self) -> None:
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
        async with server:
            await stop.wait()
        self.router.close()
        self.socket_path.unlink(missing_ok=True)
