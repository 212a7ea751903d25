"""The router's data plane: asyncio Protocols fed straight from the sockets, no streams, no task
per request.

Three objects carry a request: a `ClientConnection` (one per client socket: parses request heads,
keeps pipelined bytes, streams a request body it cannot keep), an `Exchange` (one request: picks
a backend, retries, answers 503/502/504, counts) and an `UpstreamConnection` (one per backend
socket, pooled per backend: sends the request, reads the response, passes it to the client).
Everything happens in `data_received` callbacks; the only coroutine is opening a new upstream
connection. A backend is chosen per request, so a pool switch applies to the very next request
of a kept-alive client connection.

Retries, so that no request fails while instances come and go:
- a refused or reset connection before any byte was sent: another backend;
- no response on a *reused* upstream connection (the backend closed it meanwhile): once more on a
  fresh connection, for idempotent methods only (a POST may have been acted upon);
- nothing is retried once a byte of the response reached the client; a small response is read
  whole before it is sent, so a backend dying in the middle of one is retried (idempotent only);
- when every backend of the pool failed that way, the pool is tried again after a short pause
  (up to three rounds, 0.3 s in all) before the client gets a 503.
Draining (`Exchange.cut`): requests still running when the drain timeout passes are cut, with a
504 if their response had not started.

Flow control: a slow reader pauses the peer it reads from (client <-> upstream), and a client
is not read past 64 KiB of pipelined requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from herdsman.router.http import (
    IDEMPOTENT,
    MAX_HEAD,
    UNTIL_CLOSE,
    BadMessage,
    Framer,
    Head,
    parse_head,
    simple_response,
    status_of,
)

if TYPE_CHECKING:
    from herdsman.router.proxy import Backend, Route, Router

MAX_RETAINED_BODY = 1 << 20  # request bodies up to this size are kept for a retry
SMALL_BODY = 65536  # responses up to this size are read whole, then sent with their head in one write
MAX_PENDING = 262144  # streamed request body buffered while no upstream is connected yet
RETRY_ROUNDS = 3  # rounds over the whole pool when every backend failed before answering
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# reasons a client socket is not read (a bit each)
HOLD_BUFFER, HOLD_UPSTREAM, HOLD_PENDING, HOLD_WRITING = 1, 2, 4, 8


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "body_framer",
        "buf",
        "continued",
        "eof",
        "exchange",
        "extra",
        "holds",
        "listen",
        "parsing",
        "router",
        "transport",
        "want",
    )

    def __init__(self, router: Router, listen: str) -> None:
        self.router = router
        self.listen = listen
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf: bytes | bytearray = b""
        self.exchange: Exchange | None = None
        self.body_framer: Framer | None = None  # set while a streamed request body comes in
        self.extra = b""  # the header lines added to every request of this client
        self.holds = 0
        self.want = 0  # bytes the buffer needs before a request with a kept body is complete
        self.continued = False
        self.parsing = False
        self.eof = False

    # asyncio callbacks ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        forwarded = peer[0].encode() if peer else b""
        self.extra = b"\r\nX-Forwarded-For: " + forwarded + b"\r\nConnection: keep-alive"

    def data_received(self, data: bytes) -> None:
        framer = self.body_framer
        if framer is not None:  # a streamed request body, passed on as it comes
            exchange = self.exchange
            end = framer.feed(data)
            if exchange is not None:
                exchange.request_body(data if end == len(data) else data[:end])
            if not framer.done:
                return
            self.body_framer = None
            if exchange is not None:
                exchange.body_done = True
            data = data[end:]
            if not data:
                return
        buf = self.buf
        if not buf:
            self.buf = data
        else:
            if not isinstance(buf, bytearray):
                buf = self.buf = bytearray(buf)
            buf += data
        if self.exchange is None:
            if len(self.buf) >= self.want:
                self.next_request()
        elif len(self.buf) > 65536:
            self.hold(HOLD_BUFFER)

    def eof_received(self) -> bool:
        self.eof = True
        return self.exchange is not None  # answer what is in flight first; else let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        exchange, self.exchange = self.exchange, None
        self.buf = b""
        if exchange is not None:
            exchange.abandon()

    def pause_writing(self) -> None:
        self.hold(HOLD_WRITING)
        upstream = self.exchange.upstream if self.exchange else None
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.exchange.upstream if self.exchange else None
        if upstream is not None:
            upstream.resume_reading()
        self.unhold(HOLD_WRITING)
        if self.exchange is None and self.buf:
            self.next_request()

    # flow control --------------------------------------------------------------------------------
    def hold(self, reason: int) -> None:
        if not self.holds and not self.transport.is_closing():
            self.transport.pause_reading()
        self.holds |= reason

    def unhold(self, reason: int) -> None:
        if self.holds & reason:
            self.holds &= ~reason
            if not self.holds and not self.transport.is_closing():
                self.transport.resume_reading()

    # requests ------------------------------------------------------------------------------------
    def next_request(self) -> None:
        """Start the requests waiting in the buffer, one at a time (a loop, not recursion, since a
        request answered at once, a 404 or a 503, finishes inside ``start``)."""
        if self.parsing:
            return
        self.parsing = True
        try:
            while self.exchange is None and self.buf and not self.holds & HOLD_WRITING:
                if self.transport.is_closing() or not self._start_one():
                    break
        finally:
            self.parsing = False
        if self.exchange is None and not self.transport.is_closing():
            if self.eof and not self.buf:
                self.transport.close()
            else:
                self.unhold(HOLD_BUFFER)

    def _start_one(self) -> bool:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self.fail(400, "Bad Request", "message head too large")
            return False
        try:
            head = parse_head(bytes(buf[:end]))
        except BadMessage as exc:
            self.fail(400, "Bad Request", str(exc))
            return False
        length, chunked = head.length, head.chunked
        if head.encoded and (not chunked or length is not None):  # RFC 9112 6.3: no way to frame it
            self.fail(400, "Bad Request", "Transfer-Encoding must end with chunked, without Content-Length")
            return False
        start = end + 4
        expects = head.expect is not None and (head.get(b"expect") or b"").lower() == b"100-continue"
        if chunked or (length or 0) > MAX_RETAINED_BODY:  # streamed: cannot be sent twice
            if expects:
                self.transport.write(CONTINUE)  # the router asks for the body, not the instance
            rest = buf[start:]
            self.buf = b""
            self.want = 0
            self.body_framer = Framer.for_head(head, response=False)
            self.exchange = Exchange(self, head, None)
            self.exchange.start()
            if rest:
                self.data_received(bytes(rest))
            return False
        if length:
            if len(buf) < start + length:  # the body is not all here yet
                self.want = start + length
                if expects and not self.continued:
                    self.continued = True
                    self.transport.write(CONTINUE)
                return False
            body = bytes(buf[start : start + length])
            start += length
        else:
            body = b""
        self.buf = buf[start:]
        self.want = 0
        self.continued = False
        self.exchange = Exchange(self, head, body)
        self.exchange.start()
        return True

    def finished(self, keep: bool) -> None:
        self.exchange = None
        if not keep or self.transport.is_closing():
            self.transport.close()
        elif self.buf or self.holds or self.eof:
            self.next_request()

    def fail(self, status: int, reason: str, text: str) -> None:
        self.transport.write(simple_response(status, reason, text + "\n", close=True))
        self.transport.close()


class Exchange:
    """One request, from its head to the last byte of its response.

    No ``__slots__``: what most requests never set (a retry's state, a timer, a pending body)
    stays a class attribute, so a request pays only for what it uses."""

    route: Route | None = None
    request = b""  # the head as sent to the backend
    tried: frozenset[str] | set[str] = frozenset()  # backends that failed this request
    rounds = 0
    backend: Backend | None = None
    upstream: UpstreamConnection | None = None
    connecting: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    pending: bytearray | None = None  # a streamed body that came before its upstream connection
    reused = False
    started = False  # a byte of the response reached the client: no retry any more
    done = False
    t0 = 0.0

    def __init__(self, client: ClientConnection, head: Head, body: bytes | None) -> None:
        self.client = client
        self.head = head
        self.body = body  # None: streamed, cannot be re-sent
        self.body_done = body is not None
        start = head.start
        self.method = start[: start.find(b" ")]
        tokens = head.tokens
        if tokens:
            self.client_keep = (start.endswith(b"HTTP/1.1") and b"close" not in tokens) or (
                b"keep-alive" in tokens
            )
        else:
            self.client_keep = start.endswith(b"HTTP/1.1")

    def start(self) -> None:
        client = self.client
        self.route = client.router.route_for(client.listen, self.head)
        if self.route is None:
            self.answer(simple_response(404, "Not Found", "no route for this Host on this address\n"))
            return
        self.request = self.head.encode(client.extra, drop_expect=True)
        self.attempt()

    def attempt(self) -> None:
        self.timer = None
        if self.done:
            return
        route = self.route
        assert route is not None
        backend = route.choose(self.tried)
        if backend is None:
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
        if backend.idle and body is not None:
            self.reused = True
            upstream = backend.idle.pop()
            upstream.exchange = self
            self.upstream = upstream
            upstream.transport.write(self.request + body if body else self.request)
        else:
            self.connect()

    def connect(self) -> None:
        self.reused = False
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
        else:
            pending, self.pending = self.pending, None
            upstream.transport.write(self.request + pending if pending else self.request)
            self.client.unhold(HOLD_PENDING)

    def retry(self) -> None:
        """This backend failed before the response began: leave it out and choose again."""
        backend = self.backend
        if backend is not None:
            self.tried = {*self.tried, backend.address}
        self.release()
        self.attempt()

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

    def completed(self, response: bytes, keep: bool) -> None:
        """The whole response (or its last piece) is ``response``; it goes to the client."""
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.requests += 1
            backend.latency_total += time.monotonic() - self.t0
            backend.inflight -= 1
            backend.exchanges.discard(self)
        self.done = True
        self.started = True
        self.upstream = None
        client = self.client
        if response:
            client.transport.write(response)
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
                self.retry()  # it died before a byte reached the client: another backend
            return
        self.failed()

    def failed(self) -> None:
        backend = self.backend
        if backend is not None:
            backend.requests += 1
            backend.errors += 1
        self.release()
        self.done = True
        if not self.started:
            who = (backend.instance or backend.address) if backend else "?"
            text = f"instance {who} closed the connection; a {self.method.decode()} is not retried\n"
            self.client.transport.write(simple_response(502, "Bad Gateway", text, close=True))
        self.client.exchange = None
        self.client.transport.close()

    def cut(self) -> None:
        """The drain timeout passed with this request still running."""
        if self.backend is not None:
            self.backend.errors += 1
        self.abandon()
        if not self.started:
            self.client.transport.write(
                simple_response(504, "Gateway Timeout", "the instance was drained\n", close=True)
            )
        self.client.exchange = None
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


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("backend", "buf", "client_keep", "exchange", "framer", "keep", "read_paused", "transport")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.exchange: Exchange | None = None
        self.buf = b""
        self.framer: Framer | None = None  # set while a response body is streamed to the client
        self.keep = False  # this connection may carry another request after the response
        self.client_keep = False  # the client's may (the response was framed, or had no body)
        self.read_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        self.exchange = None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            if self in self.backend.idle:
                self.backend.idle.remove(self)
            return
        if self.framer is not None and self.framer.mode == UNTIL_CLOSE:
            exchange.completed(b"", keep=False)  # an until-close body ends with its connection
            return
        exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.hold(HOLD_UPSTREAM)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.unhold(HOLD_UPSTREAM)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: this connection is not to be trusted
            self.transport.close()
            return
        framer = self.framer
        if framer is not None:  # a streamed response body, passed on as it comes
            end = framer.feed(data)
            if framer.done:
                self.framer = None
                self._complete(exchange, data if end == len(data) else data[:end], end == len(data))
            else:
                exchange.client.transport.write(data)
            return
        try:
            self._response(exchange, self.buf + data if self.buf else data)
        except BadMessage:
            self.exchange = None
            self.transport.close()
            exchange.upstream_lost()

    def _response(self, exchange: Exchange, buf: bytes) -> None:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise BadMessage("response head too large")
                self.buf = buf
                return
            head = Head(buf[:end])  # a status line and header lines, passed on as they are
            start = head.start
            if start[8:9] == b" " and start[9:12].isdigit() and start[:7] == b"HTTP/1.":
                status = int(start[9:12])
            else:
                status = status_of(head)
            if status >= 200 or status == 101:
                break
            buf = buf[end + 4 :]  # an interim response (100 Continue): not passed on
        if exchange.method == b"HEAD" or status in (204, 304, 101):
            length: int | None = 0
        elif head.chunked:
            length = None
        else:
            length = head.length
            if length is None:  # until the upstream closes: the client connection closes too
                self.keep = self.client_keep = False
                self.buf = b""
                self.framer = Framer(UNTIL_CLOSE)
                exchange.started = True
                exchange.client.transport.write(head.encode(b"\r\nConnection: close"))
                if len(buf) > end + 4:
                    self.data_received(buf[end + 4 :])
                return
        self.keep = b"close" not in head.tokens and status != 101
        self.client_keep = status != 101
        if length is not None and length <= SMALL_BODY:  # head and a small body in one send
            whole = end + 4 + length
            if len(buf) < whole:
                self.buf = buf
                return
            self.buf = b""
            out = head.encode()
            self._complete(exchange, out + buf[end + 4 : whole] if length else out, len(buf) == whole)
            return
        self.buf = b""
        exchange.started = True
        exchange.client.transport.write(head.encode())
        self.framer = Framer.for_head(head, response=True)
        if len(buf) > end + 4:
            self.data_received(buf[end + 4 :])

    def _complete(self, exchange: Exchange, response: bytes, reusable: bool) -> None:
        """The response ends with ``response``: this connection goes back to the pool or closes."""
        self.exchange = None
        backend = self.backend
        if reusable and self.keep and exchange.body_done and not backend.draining:
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            backend.idle.append(self)
        else:
            self.transport.close()
        exchange.completed(response, self.client_keep)

    def pause_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()
