"""The agent's periodic work (drift checks, preview expiry, scheduled prunes): one loop for all.

Each round waits its interval (read again every round, so a reloaded herd.toml takes effect;
0 or less: the work is off) or until the agent stops, whichever comes first, then runs once; a
failure is reported and the next round tries again, so one bad round never ends the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def every(
    interval: Callable[[], float],
    stopping: asyncio.Event,
    once: Callable[[], Awaitable[Any]],
    failed: Callable[[Exception], None],
) -> None:
    """Run ``once`` every ``interval()`` seconds until ``stopping`` is set."""
    while not stopping.is_set():
        seconds = interval()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
        if stopping.is_set():
            return
        try:
            await once()
        except Exception as exc:  # reported; the next round tries again
            failed(exc)
