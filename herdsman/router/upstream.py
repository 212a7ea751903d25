"""The router's upstream connections: one per backend socket, kept alive and pooled per backend.

A response is read as bytes and passed on as they are, but for its hop-by-hop lines: its head is
found with one regex pass (`router/http.Head`), its body's end by a `Framer` that only scans
(chunk sizes, extensions and trailers go through untouched). These bytes come from our own
instances, and keeping them whole is worth more here than a second parser: a response to HEAD,
or an interim 1xx, needs no special parser state. A response up to 64 KiB is read whole and sent
with its head in one write; a longer one is streamed, the backend paused while the client is slow.

The bytes of a response are never joined: a small response read in several pieces is kept as a
list and written with ``writelines`` (one ``writev`` on uvloop), its body as memoryviews of what
was read, and a response whose head needs no change is passed on as the very bytes read.
(Copying 64 KiB three times per response cost more than all the Python of a request:
BENCHMARKS.md.) When the router will close the client's connection after a response (the client
asked for it, or the response is framed by the upstream's close) the response says
``Connection: close``, so the client does not send another request on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from herdsman.router.flow import HOLD_UPSTREAM
from herdsman.router.http import MAX_HEAD, UNTIL_CLOSE, BadMessage, Framer, Head, status_of

if TYPE_CHECKING:
    from herdsman.router.exchange import Exchange
    from herdsman.router.proxy import Backend

SMALL_BODY = 65536  # responses up to this size are read whole, then sent with their head in one write
VIEW_FROM = 2048  # a body piece longer than this is passed on as a memoryview, not copied
CLOSE = b"\r\nConnection: close"


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "backend",
        "buf",
        "client_keep",
        "exchange",
        "framer",
        "keep",
        "parts",
        "read_paused",
        "remaining",
        "transport",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.exchange: Exchange | None = None
        self.buf = b""
        self.framer: Framer | None = None  # set while a response body is streamed to the client
        self.keep = False  # this connection may carry another request after the response
        self.client_keep = False  # the client's may (the response was framed, or had no body)
        self.read_paused = False
        self.parts: list[bytes | memoryview] | None = None  # a small response whose body is still coming
        self.remaining = 0  # bytes of that body still to come

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
            exchange.completed(None, keep=False)  # an until-close body ends with its connection
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
        parts = self.parts
        if parts is not None:  # the rest of a small response, kept to go with its head in one write
            remaining = self.remaining - len(data)
            if remaining > 0:
                parts.append(data)
                self.remaining = remaining
                return
            self.parts = None
            parts.append(data if remaining == 0 else memoryview(data)[: len(data) + remaining])
            self._complete(exchange, parts, remaining == 0)
            return
        framer = self.framer
        if framer is not None:  # a streamed response body, passed on as it comes
            end = framer.feed(data)
            if framer.done:
                self.framer = None
                self._complete(exchange, [data if end == len(data) else data[:end]], end == len(data))
            else:
                exchange.client.transport.write(data)
            return
        exchange.answering = True  # its first byte came: no first-byte timeout any more
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
            status = status_of(head)
            if status >= 200 or status == 101:
                break
            buf = buf[end + 4 :]  # an interim response (100 Continue): not passed on
        exchange.status = status  # counted once, when the exchange completes
        no_body = exchange.method == b"HEAD" or status in (204, 304, 101)
        length = 0 if no_body else None if head.chunked else head.length
        tokens = head.tokens  # an HTTP/1.0 backend keeps the connection only when it says so
        persistent = head.start[5:8] == b"1.1" or b"keep-alive" in tokens
        framed = no_body or head.chunked or length is not None  # else: until the upstream closes
        self.keep = framed and persistent and b"close" not in tokens and status != 101
        self.client_keep = framed and status != 101
        # the client's connection closes after this response: say so (not on a 101, whose
        # Connection header is the upgrade's)
        extra = CLOSE if status != 101 and not (framed and exchange.client_keep) else b""
        self.buf = b""
        if length is not None and length <= SMALL_BODY:  # head and a small body in one send
            whole = end + 4 + length
            size = len(buf)
            if not head.hops and not extra and size == whole:
                self._complete(exchange, [buf], True)  # nothing to change: the bytes as they came
                return
            out = head.encode(extra)
            if not length:
                self._complete(exchange, [out], size == whole)
            elif size < whole:  # the rest of the body follows
                self.parts = [out, buf[end + 4 :] if size - end < VIEW_FROM else memoryview(buf)[end + 4 :]]
                self.remaining = whole - size
            elif length < VIEW_FROM:
                self._complete(exchange, [out, buf[end + 4 : whole]], size == whole)
            else:
                self._complete(exchange, [out, memoryview(buf)[end + 4 : whole]], size == whole)
            return
        exchange.started = True
        exchange.client.transport.write(head.encode(extra))
        self.framer = Framer.for_head(head)
        if len(buf) > end + 4:
            self.data_received(buf[end + 4 :])

    def _complete(self, exchange: Exchange, response: list[bytes | memoryview], reusable: bool) -> None:
        """The response ends with ``response``: this connection goes back to the pool or closes."""
        self.exchange = None
        backend = self.backend
        if reusable and self.keep and exchange.body_done and not backend.draining:
            self.resume_reading()  # it may have been paused for a slow client
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
