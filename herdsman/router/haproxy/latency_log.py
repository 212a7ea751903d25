"""Latency histograms for HAProxy: its request log, sampled, read into the embedded router's buckets.

HAProxy's `show stat` has counts and a mean, no distribution, and the canary's verdict compares
distributions (Mann-Whitney on histograms) and the dashboard draws p50/p99. So herdsman's HAProxy
logs one request in LATENCY_SAMPLE, at random (`http-request set-log-level silent if { rand(N) gt 0 }`:
HAProxy's own `log ... sample 1:N` is periodic, and with round robin over two servers it sampled
only one of them), `format raw`, `log-format "%b %s %Tr"` (backend, server, milliseconds to the
response's headers), to a unix datagram socket,
`.herd/run/haproxy-log.sock`, and the process that reads HAProxy's stats (the agent; a CLI deploy
when no agent runs) bins each line as the embedded router bins a request (`router/latency.py`).

The histograms count from when this process began to read and hold a sample (one request in
LATENCY_SAMPLE), which is what a window of the canary and the dashboard's quantiles need:
differences between readings of one process, and shapes, not totals (the request counts come from
`show stat`). With nobody reading, HAProxy's datagrams are refused and dropped: nothing blocks.
Only one process reads: a live reader's socket is left alone (a second process then reports no
histogram), a stale one (its process gone) is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from pathlib import Path

from herdsman.router.latency import bucket, empty

LATENCY_SAMPLE = 4  # one request in this many, at random, is logged (each costs HAProxy a datagram)
RETRY_EVERY = 10.0  # seconds between two tries to read a log another live process reads

Key = tuple[str, str]  # (HAProxy backend, server name)


class LatencyLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.histograms: dict[Key, list[int]] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused_at = float("-inf")  # when another live process was found reading

    @property
    def reading(self) -> bool:
        """Whether this process reads the log (its histograms are then counting)."""
        return self._loop is not None

    def feed(self, line: bytes) -> None:
        """One log line, ``BACKEND SERVER TR_MS``; anything else (no server, no response) is skipped."""
        parts = line.split()
        if len(parts) < 3:
            return
        backend, server, elapsed = parts[-3:]
        try:
            milliseconds = int(elapsed)
        except ValueError:
            return
        if milliseconds < 0 or server.startswith(b"<"):  # -1: no response; <NOSRV>
            return
        key = (backend.decode(errors="replace"), server.decode(errors="replace"))
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = empty()
        histogram[bucket(milliseconds / 1000.0)] += 1

    def read(self) -> None:
        """Make sure this process reads the log in the running event loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop or time.monotonic() - self._refused_at < RETRY_EVERY:
            return
        if self._sock is None:
            self._sock = self._bind()
            if self._sock is None:
                self._refused_at = time.monotonic()
                return
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for line in data.splitlines():
                self.feed(line)

    def _bind(self) -> socket.socket | None:
        if self.path.exists() and _live(self.path):
            return None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock


def _live(path: Path) -> bool:
    """Whether a process reads on the datagram socket at ``path`` (else it is a stale file)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(str(path))
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
