"""Exclusive locks that name their holder: an flock on a file holding the holder's pid and task.

The kernel drops an flock when its holder dies, so a killed deploy or agent never leaves a stale
lock behind; the pid and the task written in the file ("4242 prune") let the one who waits say who
holds it and what it is doing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from herdsman.errors import HerdError


@contextlib.contextmanager
def pid_lock(
    path: Path, busy: Callable[[str], HerdError], wait: float = 0.0, task: str = ""
) -> Iterator[None]:
    """Hold ``path`` exclusively, for ``task``; after ``wait`` seconds raise ``busy(holder)``, where
    holder is what the holder wrote: its pid, then its task if it named one ("4242 prune")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 128, 0).decode(errors="replace").strip() or "unknown"
                    raise busy(holder) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {task}".strip().encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def lock_holder(path: Path) -> int | None:
    """The pid holding ``path``, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        text = os.pread(fd, 128, 0).decode(errors="replace").split(maxsplit=1)
        return int(text[0]) if text and text[0].isdigit() else None
    finally:
        os.close(fd)
