"""The dashboard's server-sent event streams: live numbers, new events, an instance's log.

Each stream ends after ``STREAM_SECONDS`` (the browser's EventSource reconnects by itself, with
the id of the last event it saw), when the browser goes away, or at once when the agent stops, so
a page left open never holds the agent's shutdown. Reading goes by polling the state store or the
log file, at most a few times a second per open page: what changes here changes at that pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

STREAM_SECONDS = 30  # a live stream ends after this; the browser's EventSource reconnects
POLL = 0.3  # seconds between looks at the state store or a log file
TAIL_BYTES = 65536  # the end of a log file a page starts from
LINE_BYTES = 8192  # a longer log line is cut


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"}
    )


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def every_second(
    request: Request, stopping: asyncio.Event, reading: Callable[[], dict[str, Any]]
) -> StreamingResponse:
    """``reading()`` as one message a second."""

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        ends = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < ends and not stopping.is_set():
            if await request.is_disconnected():
                return
            yield b"data: " + json.dumps(reading()).encode() + b"\n\n"
            await _pause(stopping, 1.0)

    return _stream(body())


def new_events(
    request: Request,
    stopping: asyncio.Event,
    after: int,
    since: Callable[[int], list[dict[str, Any]]],
) -> StreamingResponse:
    """Each event ``since(after)`` gives, once, as it comes; a reconnecting browser's
    `Last-Event-ID` says where it was."""
    resumed = request.headers.get("last-event-id", "")
    start = int(resumed) if resumed.isdigit() and len(resumed) < 19 else after

    async def body() -> AsyncIterator[bytes]:
        last = start
        yield b"retry: 1000\n\n"
        ends = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < ends and not stopping.is_set():
            if await request.is_disconnected():
                return
            for event in since(last):
                last = max(last, int(event["id"]))
                yield f"id: {event['id']}\ndata: {json.dumps(event)}\n\n".encode()
            await _pause(stopping, POLL)

    return _stream(body())


def tail(file: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``file`` (from its last TAIL_BYTES at most)."""
    with file.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - TAIL_BYTES))
        return [line[:LINE_BYTES] for line in handle.read().decode(errors="replace").splitlines()[-lines:]]


def follow_file(request: Request, stopping: asyncio.Event, file: Path) -> StreamingResponse:
    """The lines written to ``file`` from now on (from where a reconnecting browser stopped: its
    `Last-Event-ID` is the byte offset it had read up to)."""
    resumed = request.headers.get("last-event-id", "")
    size = file.stat().st_size
    start = int(resumed) if resumed.isdigit() and int(resumed) <= size else size

    async def body() -> AsyncIterator[bytes]:
        offset = start
        yield b"retry: 1000\n\n"
        ends = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < ends and not stopping.is_set():
            if await request.is_disconnected():
                return
            with contextlib.suppress(OSError):
                now = file.stat().st_size
                if now < offset:  # the file began again
                    offset = 0
                if now > offset:
                    with file.open("rb") as handle:
                        handle.seek(offset)
                        data = handle.read(min(now - offset, TAIL_BYTES))
                    complete = data.rfind(b"\n") + 1
                    if not complete and len(data) >= TAIL_BYTES:  # one very long line: cut it
                        complete = len(data)
                    if complete:
                        offset += complete
                        lines = [
                            line[:LINE_BYTES]
                            for line in data[:complete].decode(errors="replace").splitlines()
                        ]
                        yield f"id: {offset}\ndata: {json.dumps(lines)}\n\n".encode()
            await _pause(stopping, POLL)

    return _stream(body())
