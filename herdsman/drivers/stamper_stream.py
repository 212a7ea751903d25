"""One instance's output on its way to its log file, as the log stamper (`stamper.py`) reads it:
complete lines stamped on arrival, a partial line held up to PARTIAL_CAP bytes, the FIFO opened so
that its writers' end is seen. Standard library only, like the stamper, which runs with `-S`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time

PARTIAL_CAP = 64 * 1024  # a line longer than this is written in pieces
READ_SIZE = 64 * 1024


def stamp(now: float) -> bytes:
    """The stamp of a line that arrived at ``now``: UTC to the microsecond, then a space."""
    micros = int(now % 1 * 1e6)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{micros:06d}Z ".encode()


class Stream:
    """One instance's output on its way to its log file: complete lines stamped, a partial held."""

    def __init__(self, instance: str, fd: int, log: str) -> None:
        self.instance = instance
        self.fd = fd
        self.path = log
        self.log = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self.partial = b""
        st = os.fstat(fd)
        self.node = (st.st_dev, st.st_ino)  # the FIFO itself: an id can be reused, an open inode not

    def feed(self, data: bytes, now: float) -> None:
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        out = []
        if end:
            prefix = stamp(now)
            out = [prefix + line + b"\n" for line in data[: end - 1].split(b"\n")]
        while len(self.partial) >= PARTIAL_CAP:
            out.append(stamp(now) + self.partial[:PARTIAL_CAP] + b"\n")
            self.partial = self.partial[PARTIAL_CAP:]
        if out:
            write_all(self.log, b"".join(out))

    def close(self, now: float) -> None:
        try:
            if self.partial:
                write_all(self.log, stamp(now) + self.partial + b"\n")
                self.partial = b""
        finally:
            os.close(self.log)
            os.close(self.fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_fifo(path: str) -> int:
    """A FIFO's read end, opened so that the kernel reports its hang-up: a reader opened while the
    pipe already has writers is told of their end only after a writer opened *after* it (Linux
    counts writer opens), so one is opened and closed at once."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    return fd


def report(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"stamper: {message}", file=sys.stderr, flush=True)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            report(f"{path}: {exc}")
