"""The router's client connections: requests parsed by httptools, queued, answered in order.

A client's bytes are untrusted, so they go to llhttp (Node.js's parser, through httptools) rather
than to a parser of our own: it refuses what two parsers could read two ways (Content-Length with
Transfer-Encoding, a space before a colon, bad chunk sizes) and is faster here than splitting
heads in Python (BENCHMARKS.md). Its callbacks build each request's head for the backend once,
with the hop-by-hop headers (and those the Connection header names) left out and
X-Forwarded-For added.

A request becomes an `Exchange` when its head is complete, and starts once the parser is done
with the bytes at hand (llhttp may still refuse a message after its head, a bad
Transfer-Encoding say: nothing of it has reached a backend then). Requests a client pipelines wait in a
queue and are answered one at a time, in order. A body up to 1 MiB is kept whole before the
request starts, so it can be sent again on a retry; a longer or chunked one is streamed as it
comes (re-chunked for the backend) and cannot be retried once sent. The router answers
``Expect: 100-continue`` itself; the instance never sees it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from herdsman.router.exchange import Exchange
from herdsman.router.flow import HOLD_BUFFER, HOLD_UPGRADE, HOLD_WRITING
from herdsman.router.http import HOP_BY_HOP, MAX_HEAD, simple_response

if TYPE_CHECKING:
    from herdsman.router.proxy import Route, Router

MAX_RETAINED_BODY = 1 << 20  # request bodies up to this size are kept for a retry
MAX_QUEUED = 16  # pipelined requests read ahead of the one being answered
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NOTED = HOP_BY_HOP | {b"content-length", b"transfer-encoding", b"host", b"expect"}
_PLAIN = (b"keep-alive", b"close")


class HeadTooLarge(Exception):
    def __str__(self) -> str:
        return f"request head over {MAX_HEAD} bytes"


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "advancing",
        "eof",
        "extra",
        "head_size",
        "headers",
        "holds",
        "listen",
        "parser",
        "queue",
        "reading",
        "route",
        "route_host",
        "route_version",
        "router",
        "transport",
        "url",
    )

    def __init__(self, router: Router, listen: str) -> None:
        self.router = router
        self.listen = listen
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()  # the first is being answered, the rest wait
        self.reading: Exchange | None = None  # the request whose body is coming in
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0  # bytes of header lines so far: a head is at most MAX_HEAD
        self.url = b""
        self.extra = b""  # the header lines added to every request of this client
        self.holds = 0  # why the socket is not read (HOLD_* bits)
        self.advancing = False
        self.eof = False
        self.route: Route | None = None  # the route of the last request, for its Host ...
        self.route_host: bytes | None = None
        self.route_version = -1  # ... as long as the router's routes are those of this version

    # asyncio callbacks ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        forwarded = peer[0].encode() if peer else b""
        self.extra = b"X-Forwarded-For: " + forwarded + b"\r\nConnection: keep-alive\r\n\r\n"

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # what follows is another protocol: answer, then close
            self.hold(HOLD_UPGRADE)
            if self.queue:
                self.queue[-1].client_keep = False
                self.advance()
            else:
                self.transport.close()
        except httptools.HttpParserError as exc:
            ours = exc.__cause__ or exc.__context__  # a callback's own exception, chained by httptools
            cause = ours if isinstance(ours, HeadTooLarge) else exc
            self.refuse(str(cause) or type(cause).__name__)
        else:
            self.advance()  # after the parser is done with these bytes: it may still refuse them

    def eof_received(self) -> bool:
        self.eof = True
        return bool(self.queue)  # answer what is in flight first; else let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        queue, self.queue = self.queue, deque()
        for exchange in queue:
            exchange.abandon()

    def pause_writing(self) -> None:
        self.hold(HOLD_WRITING)
        upstream = self.queue[0].upstream if self.queue else None
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.queue[0].upstream if self.queue else None
        if upstream is not None:
            upstream.resume_reading()
        self.unhold(HOLD_WRITING)
        self.advance()

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

    # httptools callbacks -------------------------------------------------------------------------
    # (no on_message_begin: one Python call less per request; what a message collects is reset
    # in on_headers_complete, and a message refused before it ends the connection)
    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:  # llhttp itself would keep reading headers for ever
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        version = b" HTTP/1.1" if parser.get_http_version() == "1.1" else b" HTTP/1.0"
        lines = [method + b" " + self.url + version]
        headers = self.headers
        self.headers, self.url, self.head_size = [], b"", 0
        host = length = named = None
        chunked = expect = False
        for name, value in headers:
            lower = name.lower()
            if lower not in _NOTED:
                lines.append(name + b": " + value)
            elif lower == b"host":
                host = value.lower()
                lines.append(name + b": " + value)
            elif lower == b"content-length":
                length = int(value)  # llhttp checked it: digits, and no Transfer-Encoding beside it
                lines.append(name + b": " + value)
            elif lower == b"transfer-encoding":
                chunked = True  # llhttp refuses a request whose last coding is not chunked
                lines.append(name + b": " + value)
            elif lower == b"expect":
                expect = value.lower() == b"100-continue"
            elif lower == b"connection":
                tokens = value.lower()
                if tokens not in _PLAIN:
                    named = {t.strip() for t in tokens.split(b",")}
        if named:  # the Connection header names headers that stop here too
            lines = lines[:1] + [line for line in lines[1:] if line.split(b":", 1)[0].lower() not in named]
        lines.append(self.extra)
        streamed = chunked or (length or 0) > MAX_RETAINED_BODY
        keep = parser.should_keep_alive()
        exchange = Exchange(self, b"\r\n".join(lines), method, host, keep, streamed, chunked, expect)
        self.reading = exchange
        self.queue.append(exchange)
        if len(self.queue) > MAX_QUEUED:
            self.hold(HOLD_BUFFER)

    def on_body(self, body: bytes) -> None:
        exchange = self.reading
        if exchange is None:
            return
        if exchange.body is None:  # streamed
            exchange.request_body(b"%x\r\n%b\r\n" % (len(body), body) if exchange.chunked else body)
        elif exchange.parts is None:
            exchange.parts = [body]
        else:
            exchange.parts.append(body)

    def on_message_complete(self) -> None:
        exchange, self.reading = self.reading, None
        if exchange is None:
            return
        if exchange.body is None:
            if exchange.chunked:
                exchange.request_body(b"0\r\n\r\n")
            exchange.body_done = True
        else:
            if exchange.parts:
                exchange.body = b"".join(exchange.parts)
                exchange.parts = []
            exchange.ready = True

    # requests ------------------------------------------------------------------------------------
    def advance(self) -> None:
        """Start the first request of the queue when it can start (a loop, not recursion: a request
        answered at once, a 404 or a 503, finishes inside ``start``)."""
        if self.advancing:
            return
        self.advancing = True
        try:
            queue = self.queue
            while queue and not self.transport.is_closing():
                exchange = queue[0]
                if exchange.begun:
                    break
                if exchange.expect:
                    exchange.expect = False
                    self.transport.write(CONTINUE)  # the router asks for the body, not the instance
                if not exchange.ready or self.holds & HOLD_WRITING:
                    break
                exchange.begun = True
                exchange.start()
        finally:
            self.advancing = False

    def finished(self, keep: bool) -> None:
        """The first request of the queue is answered."""
        queue = self.queue
        if queue:
            queue.popleft()
        if not keep or self.transport.is_closing():
            self.transport.close()
            return
        if queue:
            if self.holds & HOLD_BUFFER and len(queue) <= MAX_QUEUED // 2:
                self.unhold(HOLD_BUFFER)
            self.advance()
        elif self.eof:
            self.transport.close()

    def refuse(self, why: str) -> None:
        """Bytes that are not HTTP/1.1: a 400 if nothing is being answered, and the end."""
        queue, self.queue = self.queue, deque()
        if not any(exchange.begun for exchange in queue):
            self.transport.write(simple_response(400, "Bad Request", f"{why}\n", close=True))
        for exchange in queue:
            exchange.abandon()
        self.transport.close()
