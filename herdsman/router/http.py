"""Just enough HTTP/1.1 for passing responses on, as pure code over bytes: note what a proxy acts
on in a message head, and find where a body ends without changing a byte of it.

(Requests are parsed by httptools in `router/inbound.py`.) The upstream side (`router/upstream.py`)
is fed straight from `data_received`, so nothing here reads a stream: a `Head` is made of the bytes
before the blank line, and a `Framer` is told each piece of body as it arrives and says how much of
it belongs to the body. Framing follows RFC 9112:
Transfer-Encoding chunked, else Content-Length, else (responses only) until the upstream closes.
Chunked bodies are passed on as they are (sizes, extensions and trailers included), so the
framer only scans them.
"""

from __future__ import annotations

import re

MAX_HEAD = 65536
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"proxy-authorization"}
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
MAX_CHUNK_LINE = 4096


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x."""


# The headers a proxy acts on, found in one pass over the lower-cased head: framing, options,
# and the hop-by-hop ones it must not pass on. Everything else is passed on untouched.
_NOTED = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|keep-alive|proxy-connection|te"
    rb"|trailer|upgrade|proxy-authorization):([^\r\n]*)"
)
_ANY_LINE = re.compile(rb"\r\n([^:\r\n]+):[^\r\n]*")
PLAIN_TOKENS = frozenset({b"keep-alive", b"close"})
_NO_TOKENS: frozenset[bytes] = frozenset()
_COMMON_TOKENS = {token: frozenset({token}) for token in PLAIN_TOKENS}
_END = b"\r\n\r\n"


class Head:
    """A message head kept as its bytes (start line and header lines, without the blank line).

    One regex pass notes what a proxy acts on (`_NOTED`); the rest of the head is never split,
    and `encode` cuts the hop-by-hop lines out of the original bytes."""

    __slots__ = ("chunked", "hops", "length", "lower", "raw", "start", "tokens")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lower = self.lower = raw.lower()
        end = raw.find(b"\r\n")
        self.start = raw if end < 0 else raw[:end]
        length: int | None = None  # Content-Length
        chunked = False  # Transfer-Encoding ends with chunked
        tokens = _NO_TOKENS  # Connection options, lower case
        hops: list[tuple[int, int]] = []  # where the hop-by-hop lines are
        for match in _NOTED.finditer(lower):  # (locals, not attributes, in this loop: it runs per response)
            name, value = match.groups()
            if name == b"content-length":
                value = value.strip()
                if length is not None or not value.isdigit():
                    raise BadMessage("bad or repeated Content-Length")
                length = int(value)
            elif name == b"connection":
                value = value.strip()
                common = _COMMON_TOKENS.get(value)
                tokens = common if common is not None else tokens | _tokens(value)
                hops.append(match.span())
            elif name == b"transfer-encoding":
                chunked = value.rsplit(b",", 1)[-1].strip() == b"chunked"
            else:
                hops.append(match.span())
        self.length = length
        self.chunked = chunked
        self.tokens = tokens
        self.hops = hops

    def get(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower case), its first occurrence."""
        key = b"\r\n" + name + b":"
        at = self.lower.find(key)
        if at < 0:
            return None
        at += len(key)
        end = self.lower.find(b"\r\n", at)
        return (self.raw[at:] if end < 0 else self.raw[at:end]).strip()

    def encode(self, extra: bytes = b"") -> bytes:
        """The head as sent on, blank line included: hop-by-hop headers and the headers its
        ``Connection`` names left out; ``extra`` (``\\r\\nName: value`` lines) added."""
        raw, hops = self.raw, self.hops
        if not self.tokens <= PLAIN_TOKENS:  # Connection names other headers: any line may go
            gone = HOP_BY_HOP | self.tokens
            hops = [m.span() for m in _ANY_LINE.finditer(self.lower) if m.group(1) in gone]
        if not hops:
            return raw + extra + _END
        if len(hops) == 1:
            begin, end = hops[0]
            return raw[:begin] + raw[end:] + extra + _END
        pieces, pos = [], 0
        for begin, end in hops:
            pieces.append(raw[pos:begin])
            pos = end
        pieces.append(raw[pos:])
        pieces.append(extra + _END)
        return b"".join(pieces)


def _tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip() for t in value.split(b",") if t.strip())


def status_of(head: Head) -> int:
    start = head.start
    if start[8:9] == b" " and start[9:12].isdigit() and start[:7] == b"HTTP/1.":  # the usual shape
        return int(start[9:12])
    parts = start.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise BadMessage("bad status line")
    return int(parts[1])


def simple_response(status: int, reason: str, body: str, *, close: bool = False) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + data


LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2
_SIZE, _DATA, _TRAILER = 0, 1, 2


class Framer:
    """Where a body ends. ``feed(data)`` returns how many bytes of ``data`` are body; ``done`` turns
    true at its last byte. An until-close body is done only when the connection ends."""

    __slots__ = ("done", "line", "mode", "remaining", "state")

    def __init__(self, mode: int, length: int = 0) -> None:
        self.mode = mode
        self.remaining = length
        self.done = mode == LENGTH and length == 0
        self.state = _SIZE
        self.line = b""

    @classmethod
    def for_head(cls, head: Head) -> Framer:
        """The framing of the response whose head this is."""
        if head.chunked:
            return cls(CHUNKED)
        if head.length is not None:
            return cls(LENGTH, head.length)
        return cls(UNTIL_CLOSE)

    def feed(self, data: bytes) -> int:
        if self.mode == LENGTH:
            take = min(self.remaining, len(data))
            self.remaining -= take
            self.done = self.remaining == 0
            return take
        if self.mode == UNTIL_CLOSE:
            return len(data)
        return self._scan_chunked(data)

    def _scan_chunked(self, data: bytes) -> int:
        pos, size = 0, len(data)
        while pos < size and not self.done:
            if self.state == _DATA:  # chunk data and its CRLF
                take = min(self.remaining, size - pos)
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = _SIZE
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self.line += data[pos:]
                if len(self.line) > MAX_CHUNK_LINE:
                    raise BadMessage("chunk size line too long")
                return size
            line = self.line + data[pos:end] if self.line else data[pos:end]
            self.line = b""
            pos = end + 1
            if self.state == _SIZE:
                try:
                    chunk = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadMessage("bad chunk size") from None
                if chunk < 0:
                    raise BadMessage("bad chunk size")
                self.state, self.remaining = (_TRAILER, 0) if chunk == 0 else (_DATA, chunk + 2)
            elif not line.strip():  # the blank line after the trailers: the end
                self.done = True
        return pos
