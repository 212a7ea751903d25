"""Just enough HTTP/1.1 for a reverse proxy: read a message head, and move a body along by its framing.

A head is read whole (up to 64 KiB); bodies are streamed, never buffered whole, except request
bodies small enough to be re-sent on a retry. Framing follows RFC 9112: Transfer-Encoding chunked,
else Content-Length, else (responses only) until the upstream closes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD = 65536
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"proxy-authorization"}
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x."""


@dataclass
class Head:
    start: bytes  # request line or status line
    headers: list[tuple[bytes, bytes]]
    index: dict[bytes, bytes] = field(default_factory=dict)  # lower-case name -> value, built once

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {key.lower(): value for key, value in self.headers}

    def get(self, name: bytes) -> bytes | None:
        return self.index.get(name)

    def connection_tokens(self) -> set[bytes]:
        value = self.get(b"connection") or b""
        return {token.strip().lower() for token in value.split(b",") if token.strip()}

    def chunked(self) -> bool:
        value = self.get(b"transfer-encoding")
        return value is not None and value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"

    def content_length(self) -> int | None:
        value = self.get(b"content-length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise BadMessage("bad Content-Length")
        return int(value)

    def encode(self, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        tokens = self.connection_tokens()
        dropped = HOP_BY_HOP | tokens if tokens else HOP_BY_HOP
        lines = [self.start]
        lines += [k + b": " + v for k, v in self.headers if k.lower() not in dropped]
        lines += [k + b": " + v for k, v in extra]
        return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head, or None on a clean end of stream before any byte."""
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadMessage("connection closed inside a message head") from None
    except asyncio.LimitOverrunError:
        raise BadMessage("message head too large") from None
    lines = data[:-4].split(b"\r\n")
    while lines and not lines[0]:  # tolerate stray CRLF between messages
        lines.pop(0)
    if not lines:
        raise BadMessage("empty message head")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadMessage("bad header line")
        headers.append((name, value.strip()))
    return Head(lines[0], headers)


async def copy_body(
    head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, until_close: bool
) -> None:
    """Forward the body that follows ``head``, keeping its framing."""
    if head.chunked():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return
            await _copy_exactly(reader, writer, size + 2)
    length = head.content_length()
    if length is not None:
        await _copy_exactly(reader, writer, length)
    elif until_close:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(size, 65536))
        if not chunk:
            raise BadMessage("connection closed inside a body")
        writer.write(chunk)
        size -= len(chunk)
        if writer.transport.get_write_buffer_size() > 262144:
            await writer.drain()


def status_of(head: Head) -> int:
    parts = head.start.split(b" ", 2)
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
