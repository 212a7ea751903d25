"""One request through the router: choosing a backend, retrying, and every way it can end.

An `Exchange` lives from the moment its head is complete (`router/inbound.py`) to the last byte
of its response (`router/upstream.py`). It holds no task: everything happens in the protocol
callbacks; only opening a new upstream connection is a coroutine.

Retries, so that no request fails while instances come and go:
- a refused or reset connection before any byte was sent: another backend;
- no response on a *reused* upstream connection (the backend closed it meanwhile): once more on a
  fresh connection, for idempotent methods only (a POST may have been acted upon);
- nothing is retried once a byte of the response reached the client; a small response is read
  whole before it is sent, so a backend dying in the middle of one is retried (idempotent only);
- when every backend of the pool failed that way, the pool is tried again after a short pause
  (up to three rounds, 0.3 s in all) before the client gets a 503;
- no first byte of the response within the route's ``first_byte_timeout`` of the request being
  fully sent (or no connection within it), as seen by the router's watchdog (`overdue`): the
  upstream connection is aborted, never reused, and the request goes to another backend if it is
  idempotent with its body in hand (or nothing was sent); otherwise, or when no other backend is
  left, the client gets a 504. A hung instance so holds no request, nor a drain, for longer.
Timeouts and connections refused or lost count against the backend (`router/outlier.py`); a
response clears its count.
Draining (`cut`): requests still running when the drain timeout passes are cut, with a 504 if
their response had not started.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from herdsman.router.flow import HOLD_PENDING, HOLD_UPSTREAM
from herdsman.router.http import IDEMPOTENT, simple_response
from herdsman.router.latency import LATENCY_BOUNDS_MS
from herdsman.router.upstream import UpstreamConnection

if TYPE_CHECKING:
    from herdsman.router.inbound import ClientConnection
    from herdsman.router.proxy import Backend, Route

MAX_PENDING = 262144  # streamed request body buffered while no upstream is connected yet
RETRY_ROUNDS = 3  # rounds over the whole pool when every backend failed before answering


class Exchange:
    """One request, from its head to the last byte of its response.

    No ``__slots__``: what most requests never set (a retry's state, a timer, a pending body)
    stays a class attribute, so a request pays only for what it uses."""

    route: Route | None = None
    body: bytes | None
    body_done = False  # the whole request body is in hand (or sent)
    parts: list[bytes] | None = None  # a kept body as it comes in
    chunked = False  # the request body is chunked (re-chunked for the backend as it comes)
    expect = False  # the client waits for 100 Continue before sending the body
    ready = False  # it can start: its head is complete, and its body too unless streamed
    begun = False
    tried: frozenset[str] | set[str] = frozenset()  # backends that failed this request
    rounds = 0
    backend: Backend | None = None
    status: int = 0  # of the backend's response, once its head is read
    upstream: UpstreamConnection | None = None
    connecting: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    pending: bytearray | None = None  # a streamed body that came before its upstream connection
    reused = False
    sent = 0.0  # when the request was fully sent to the backend (0.0: not yet)
    answering = False  # a first byte of the response came
    timed_out = False  # a backend let it wait past the first-byte timeout
    started = False  # a byte of the response reached the client: no retry any more
    done = False
    t0 = 0.0

    def __init__(
        self,
        client: ClientConnection,
        request: bytes,
        method: bytes,
        host: bytes | None,
        keep: bool,
        streamed: bool,
        chunked: bool = False,
        expect: bool = False,
    ) -> None:
        self.client = client
        self.request = request  # the head as sent to the backend
        self.method = method
        self.host = host
        self.client_keep = keep  # the client's connection may carry another request after this one
        if chunked:
            self.chunked = True
        if expect:
            self.expect = True
        if streamed:
            self.body = None  # streamed: cannot be sent twice
            self.ready = True  # it starts at once, its body follows
        else:
            self.body = b""  # kept whole; set when the message is complete
            self.body_done = True

    def start(self) -> None:
        client = self.client
        router = client.router
        if client.route_version == router.version and client.route_host == self.host:
            self.route = client.route  # the route of this client's last request: same Host, same routes
        else:
            self.route = client.route = router.route_for(client.listen, self.host)
            client.route_host, client.route_version = self.host, router.version
        if self.route is None:
            self.answer(simple_response(404, "Not Found", "no route for this Host on this address\n"))
            return
        self.attempt()

    def attempt(self) -> None:
        self.timer = None
        if self.done:
            return
        route = self.route
        assert route is not None
        backends = route.backends
        if len(backends) == 1 and not self.tried:  # the common case of Route.choose, without a call
            backend: Backend | None = None if backends[0].draining else backends[0]
        else:
            backend = route.choose(self.tried)
        if backend is None:
            if self.timed_out:  # not again round the pool: each backend could keep it waiting again
                text = f"no instance of route {route.name} answered within {route.first_byte_timeout:g}s\n"
                self.answer(simple_response(504, "Gateway Timeout", text))
                return
            if self.tried and self.body is not None and self.rounds < RETRY_ROUNDS:
                self.rounds += 1  # every backend failed before answering: a short pause, then again
                self.tried = frozenset()
                self.timer = asyncio.get_running_loop().call_later(0.05 * self.rounds, self.attempt)
                return
            text = f"no healthy instance for route {route.name}\n"
            self.answer(simple_response(503, "Service Unavailable", text))
            return
        self.backend = backend
        backend.inflight += 1
        backend.exchanges.add(self)
        self.t0 = time.monotonic()
        body = self.body
        idle = backend.idle
        if body is not None:
            while idle:
                upstream = idle.pop()
                if upstream.transport.is_closing():  # its backend closed it; not told yet
                    continue
                self.reused = True
                upstream.exchange = self
                self.upstream = upstream
                upstream.transport.write(self.request + body if body else self.request)
                self.sent = self.t0
                return
        self.connect()

    def connect(self) -> None:
        self.reused = False
        self.sent = 0.0
        self.answering = False
        self.connecting = asyncio.get_running_loop().create_task(self._connect(self.backend))

    async def _connect(self, backend: Backend | None) -> None:
        assert backend is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: UpstreamConnection(backend), backend.host, backend.port
            )
        except OSError:  # refused or reset before any byte was sent: another backend
            self.connecting = None
            if not self.done and self.backend is backend:
                if self.route is not None:
                    self.route.failed(backend, time.monotonic())
                self.retry()
            return
        self.connecting = None
        if self.done or self.backend is not backend:
            upstream.transport.close()
            return
        upstream.exchange = self
        self.upstream = upstream
        if self.body is not None:
            upstream.transport.write(self.request + self.body if self.body else self.request)
            self.sent = time.monotonic()
        else:
            pending, self.pending = self.pending, None
            upstream.transport.write(self.request + pending if pending else self.request)
            self.client.unhold(HOLD_PENDING)
            if self.body_done:
                self.sent = time.monotonic()

    def retry(self) -> None:
        """This backend failed before the response began: leave it out and choose again."""
        backend = self.backend
        if backend is not None:
            self.tried = {*self.tried, backend.address}
        self.release()
        self.sent = 0.0
        self.answering = False
        self.attempt()

    def overdue(self, now: float) -> None:
        """The watchdog's look (`Router.watch`): has its backend kept it waiting too long?"""
        route, backend = self.route, self.backend
        if self.done or self.answering or route is None or backend is None:
            return
        if self.upstream is None:
            if self.connecting is not None and now - self.t0 >= route.first_byte_timeout:
                self.give_up(route, backend, now, sent=False)
            return
        if not self.sent:
            if self.body_done:  # a streamed body ended since the last look: its wait starts now
                self.sent = now
            return
        if now - self.sent >= route.first_byte_timeout:
            self.give_up(route, backend, now, sent=True)

    def give_up(self, route: Route, backend: Backend, now: float, sent: bool) -> None:
        """No connection, or no first byte, within the first-byte timeout: end it on this backend."""
        backend.errors += 1
        backend.timeouts += 1
        route.failed(backend, now)
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:  # never reused: a late answer on it would belong to no request
            upstream.exchange = None
            upstream.transport.abort()
        if not sent or (self.body is not None and self.method in IDEMPOTENT):
            self.timed_out = True
            self.retry()
            return
        self.release()
        who = backend.instance or backend.address
        text = (
            f"instance {who} did not answer within {route.first_byte_timeout:g}s;"
            f" a {self.method.decode()} is not retried\n"
        )
        self.answer(simple_response(504, "Gateway Timeout", text))

    def request_body(self, data: bytes) -> None:
        """A piece of a streamed request body."""
        if self.done:
            return
        if self.upstream is not None:
            self.upstream.transport.write(data)
            return
        if self.pending is None:
            self.pending = bytearray()
        self.pending += data
        if len(self.pending) > MAX_PENDING:
            self.client.hold(HOLD_PENDING)

    # outcomes ------------------------------------------------------------------------------------
    def release(self) -> None:
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.inflight -= 1
            backend.exchanges.discard(self)

    def answer(self, data: bytes) -> None:
        """An answer of the router's own (404, 503): a streamed request body cannot be skipped."""
        self.done = True
        self.client.transport.write(data)
        self.client.finished(self.client_keep and self.body is not None)

    def completed(self, response: list[bytes | memoryview] | None, keep: bool) -> None:
        """The whole response (or its last pieces) is ``response``; it goes to the client in one
        write (`writelines`: one ``writev`` on uvloop, no bytes joined here)."""
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.requests += 1
            took = time.monotonic() - self.t0
            backend.latency_total += took
            backend.latency_hist[bisect_left(LATENCY_BOUNDS_MS, took * 1000.0)] += 1  # latency.bucket
            if self.status >= 500:
                backend.responses_5xx += 1
            backend.inflight -= 1
            backend.exchanges.discard(self)
            outlier = backend.outlier
            if outlier.failures or outlier.probation:
                outlier.succeeded()
        self.done = True
        self.started = True
        self.upstream = None
        client = self.client
        if response:
            client.transport.writelines(response)
        if client.holds & HOLD_UPSTREAM:
            client.unhold(HOLD_UPSTREAM)
        client.finished(keep and self.client_keep and self.body_done)

    def upstream_lost(self) -> None:
        """The upstream connection ended before the response did."""
        self.upstream = None
        if self.done:
            return
        if not self.started and self.body is not None and self.method in IDEMPOTENT:
            if self.reused:
                self.connect()  # the backend closed an idle connection: once more on a fresh one
            else:
                self.lost()
                self.retry()  # it died before a byte reached the client: another backend
            return
        self.failed()

    def lost(self) -> None:
        """A fresh connection ended without a whole response: a failure of its backend (a reused
        one closing as a request comes is the keep-alive race, not the backend's fault)."""
        if self.backend is not None and self.route is not None and not self.reused:
            self.route.failed(self.backend, time.monotonic())

    def failed(self) -> None:
        backend = self.backend
        if backend is not None:
            backend.requests += 1
            backend.errors += 1
            self.lost()
        self.release()
        self.done = True
        if not self.started:
            who = (backend.instance or backend.address) if backend else "?"
            text = f"instance {who} closed the connection; a {self.method.decode()} is not retried\n"
            self.client.transport.write(simple_response(502, "Bad Gateway", text, close=True))
        self.client.transport.close()

    def unanswered(self, now: float) -> None:
        """Its backend is hung (it failed its health checks and is being drained): a request still
        waiting for a first byte is ended there now, as at a first-byte timeout (retried elsewhere
        when idempotent, else a 504); one whose response has begun is left to finish."""
        route, backend = self.route, self.backend
        if self.done or self.answering or route is None or backend is None:
            return
        self.give_up(route, backend, now, sent=self.upstream is not None)

    def cut(self) -> None:
        """The drain timeout passed with this request still running."""
        if self.backend is not None:
            self.backend.errors += 1
        self.abandon()
        if not self.started:
            self.client.transport.write(
                simple_response(504, "Gateway Timeout", "the instance was drained\n", close=True)
            )
        self.client.transport.close()

    def abandon(self) -> None:
        """Stop this request wherever it is (its client left, or it was cut)."""
        self.done = True
        self.release()
        if self.timer is not None:
            self.timer.cancel()
        if self.connecting is not None:
            self.connecting.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.exchange = None
            upstream.transport.abort()
