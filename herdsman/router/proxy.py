"""The embedded router's data plane: listeners, routes, pools, and forwarding one request at a time.

A backend is chosen per request (smooth weighted round robin over the backends not draining), not
per client connection, so a pool switch takes effect on the very next request even on a kept-alive
client connection. Upstream connections are kept alive and reused per backend.

Retries, so that no request fails while instances come and go:
- a refused or reset connection before any byte was sent: retried on another backend;
- no response on a *reused* upstream connection (the backend closed it meanwhile): retried once
  more, for idempotent methods only (a POST may have been acted upon);
- nothing is retried once a byte of the response reached the client (a small response is read
  whole before it is sent, so a backend dying in the middle of one is retried, for idempotent
  methods);
- when every backend of the pool failed that way, the pool is tried again after a short pause
  (up to three rounds, 0.3 s in all) before the client gets a 503.
Draining: a backend leaves the pool at once; requests in flight on it finish; those still running
when the drain timeout passes are cut, with a 504 if their response had not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field

from herdsman.router.http import (
    IDEMPOTENT,
    BadMessage,
    Head,
    copy_body,
    read_head,
    simple_response,
    status_of,
)

MAX_RETAINED_BODY = 1 << 20  # request bodies up to this size are kept for a retry
SMALL_BODY = 65536  # responses up to this size go out in one write with their head
RETRY_ROUNDS = 3  # rounds over the whole pool when every backend failed before answering


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
    draining: bool = False
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    tasks: set[asyncio.Task[object]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close_idle(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Route:
    name: str
    listen: str
    host: str | None = None
    drain_timeout: float = 30.0
    backends: list[Backend] = field(default_factory=list)

    def choose(self, exclude: set[str]) -> Backend | None:
        candidates = [b for b in self.backends if not b.draining and b.address not in exclude]
        if not candidates:
            return None
        total = sum(b.weight for b in candidates)
        best = candidates[0]
        for backend in candidates:
            backend.current += backend.weight
            if backend.current > best.current:
                best = backend
        best.current -= total
        return best


class Router:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.retired: dict[str, Backend] = {}  # draining backends no longer in any pool

    # configuration ------------------------------------------------------------------------------
    async def set_routes(self, routes: list[dict[str, object]], prefix: str = "") -> None:
        """Make the routes whose names start with ``prefix`` (one environment's) exactly ``routes``."""
        wanted = {str(r["name"]): r for r in routes}
        for name in list(self.routes):
            if name.startswith(prefix) and name not in wanted:
                del self.routes[name]
        for name, spec in wanted.items():
            route = self.routes.get(name)
            listen, host = str(spec["listen"]), spec.get("host")
            timeout = float(spec.get("drain_timeout", 30.0))  # type: ignore[arg-type]
            if route is None:
                self.routes[name] = Route(name, listen, str(host).lower() if host else None, timeout)
            else:
                route.listen, route.host, route.drain_timeout = (
                    listen,
                    str(host).lower() if host else None,
                    timeout,
                )
        needed = {r.listen for r in self.routes.values()}
        for address in list(self.servers):
            if address not in needed:
                self.servers.pop(address).close()
        for address in needed - set(self.servers):
            host, _, port = address.rpartition(":")
            self.servers[address] = await asyncio.start_server(
                functools.partial(self._client, address=address), host.strip("[]"), int(port), limit=65536
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
        for backend in old.values():  # left the pool: in-flight requests finish, idle sockets close
            backend.draining = True
            backend.close_idle()
            self.retired[backend.address] = backend

    async def drain(self, route_name: str, addresses: list[str], timeout: float) -> dict[str, int]:
        """Wait until the backends have nothing in flight; cut what still runs after ``timeout``."""
        route = self.routes.get(route_name)
        draining = [b for b in (route.backends if route else []) if b.address in addresses]
        draining += [self.retired[a] for a in addresses if a in self.retired]
        for backend in draining:
            backend.draining = True
        deadline = time.monotonic() + timeout
        while any(b.inflight for b in draining) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cut = 0
        for backend in draining:
            for task in list(backend.tasks):
                task.cancel()
                cut += 1
            backend.close_idle()
            self.retired.pop(backend.address, None)
        if route is not None:
            route.backends = [b for b in route.backends if b.address not in addresses]
        return {"cut": cut}

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, route in self.routes.items():
            out[name] = {
                "listen": route.listen,
                "host": route.host,
                "backends": [
                    {
                        "instance": b.instance,
                        "address": b.address,
                        "weight": b.weight,
                        "inflight": b.inflight,
                        "requests": b.requests,
                        "errors": b.errors,
                        "mean_latency_ms": round(1000 * b.latency_total / b.requests, 3) if b.requests else 0,
                    }
                    for b in route.backends
                ],
            }
        return out

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    # the data plane -----------------------------------------------------------------------------
    def _route_for(self, address: str, head: Head) -> Route | None:
        host = (head.get(b"host") or b"").decode("latin-1").lower().rsplit(":", 1)[0]
        fallback = None
        for route in self.routes.values():
            if route.listen != address:
                continue
            if route.host == host:
                return route
            if route.host is None:
                fallback = route
        return fallback

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, address: str
    ) -> None:
        peer = writer.get_extra_info("peername")
        forwarded = (peer[0] if peer else "").encode()
        try:
            while True:
                try:
                    head = await read_head(reader)
                except BadMessage as exc:
                    writer.write(simple_response(400, "Bad Request", f"{exc}\n", close=True))
                    break
                if head is None:
                    break
                keep = await self._exchange(head, reader, writer, address, forwarded)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, BadMessage):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self,
        head: Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        forwarded: bytes,
    ) -> bool:
        """Forward one request; return whether the client connection may carry another."""
        version = head.start.rsplit(b" ", 1)[-1]
        tokens = head.connection_tokens()
        client_keep = (version == b"HTTP/1.1" and b"close" not in tokens) or b"keep-alive" in tokens
        route = self._route_for(address, head)
        if route is None:
            writer.write(simple_response(404, "Not Found", "no route for this Host on this address\n"))
            await _discard_body(head, reader)
            return client_keep
        method = head.start.split(b" ", 1)[0]
        body: bytes | None = b""
        length = head.content_length()
        if head.chunked() or (length or 0) > MAX_RETAINED_BODY:
            body = None  # streamed: cannot be re-sent
        elif length:
            body = await reader.readexactly(length)
        request = head.encode(((b"X-Forwarded-For", forwarded), (b"Connection", b"keep-alive")))
        tried: set[str] = set()
        rounds = 0
        while True:
            backend = route.choose(tried)
            if backend is None and tried and body is not None and rounds < RETRY_ROUNDS:
                rounds += 1  # every backend failed before answering: a short pause, then once more
                tried.clear()
                await asyncio.sleep(0.05 * rounds)
                continue
            if backend is None:
                writer.write(
                    simple_response(
                        503, "Service Unavailable", f"no healthy instance for route {route.name}\n"
                    )
                )
                if body is None:
                    return False
                return client_keep
            tried.add(backend.address)
            task = asyncio.current_task()
            assert task is not None
            backend.inflight += 1
            backend.tasks.add(task)
            started = time.monotonic()
            try:
                outcome = await self._forward(backend, method, request, body, head, reader, writer)
            except asyncio.CancelledError:
                backend.errors += 1
                if not getattr(writer, "_herd_started", False):
                    writer.write(
                        simple_response(504, "Gateway Timeout", "the instance was drained\n", close=True)
                    )
                    with contextlib.suppress(Exception):
                        await writer.drain()
                return False
            finally:
                backend.inflight -= 1
                backend.tasks.discard(task)
            if outcome == "retry":
                continue
            backend.requests += 1
            backend.latency_total += time.monotonic() - started
            if outcome == "error":
                backend.errors += 1
                if not getattr(writer, "_herd_started", False):
                    who = backend.instance or backend.address
                    text = f"instance {who} closed the connection; a {method.decode()} is not retried\n"
                    writer.write(simple_response(502, "Bad Gateway", text, close=True))
                return False
            return client_keep and outcome == "keep"

    async def _forward(
        self,
        backend: Backend,
        method: bytes,
        request: bytes,
        body: bytes | None,
        head: Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> str:
        """One attempt on one backend: "keep", "close", "retry" (nothing reached the client) or "error"."""
        setattr(writer, "_herd_started", False)  # noqa: B010 - a per-connection flag
        for reused_attempt in (True, False):
            if reused_attempt and not backend.idle:
                continue
            try:
                if reused_attempt:
                    up_reader, up_writer = backend.idle.pop()
                else:
                    up_reader, up_writer = await asyncio.open_connection(
                        backend.host, backend.port, limit=65536
                    )
            except OSError:
                return "retry"  # refused or reset before any byte was sent: another backend
            try:
                if body is not None:
                    up_writer.write(request + body if body else request)  # one send, not two
                else:
                    up_writer.write(request)
                    await copy_body(head, reader, up_writer, until_close=False)
                await up_writer.drain()
                response = await read_head(up_reader)
                if response is None:
                    raise ConnectionResetError("no response")
            except (OSError, asyncio.IncompleteReadError, BadMessage):
                up_writer.close()
                if body is None:
                    return "error"
                if reused_attempt and method in IDEMPOTENT:
                    continue  # the backend closed an idle connection: once more on a fresh one
                if not reused_attempt:
                    return "retry" if method in IDEMPOTENT else "error"
                return "error"
            return await self._respond(backend, method, response, up_reader, up_writer, writer)
        return "retry"

    async def _respond(
        self,
        backend: Backend,
        method: bytes,
        response: Head,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
    ) -> str:
        status = status_of(response)
        no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
        framed = response.chunked() or response.content_length() is not None
        upstream_keep = b"close" not in response.connection_tokens() and (framed or no_body)
        extra = () if framed or no_body else ((b"Connection", b"close"),)
        head = response.encode(extra)
        length = None if no_body or response.chunked() else response.content_length()
        try:
            if length is not None and length <= SMALL_BODY:  # head and a small body in one send
                body = await up_reader.readexactly(length) if length else b""
                setattr(writer, "_herd_started", True)  # noqa: B010
                writer.write(head + body)
            else:
                setattr(writer, "_herd_started", True)  # noqa: B010
                writer.write(head)
                if not no_body:
                    await copy_body(response, up_reader, writer, until_close=not framed)
        except (OSError, asyncio.IncompleteReadError, BadMessage):
            up_writer.close()
            if not getattr(writer, "_herd_started", False) and method in IDEMPOTENT:
                return "retry"  # the backend died before a byte reached the client: another one
            return "error"
        if upstream_keep and not backend.draining:
            backend.idle.append((up_reader, up_writer))
        else:
            up_writer.close()
        return "keep" if framed or no_body else "close"


async def _discard_body(head: Head, reader: asyncio.StreamReader) -> None:
    length = head.content_length()
    if length:
        await reader.readexactly(length)
