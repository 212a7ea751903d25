"""Noticing at once: an instance's exit (a pidfd per process) and a failing liveness check.

Polling `list()` every second would make healing wait up to a second before it even starts; a
pidfd becomes readable the moment its process ends, whoever its parent is, so the agent learns of
a kill -9 within a millisecond. Liveness checks run per instance at the service's health interval,
once it has passed them (`successes` in a row): only an instance that *was* healthy and then fails
`failures` checks in a row is reported, so a starting instance is never quarantined for being slow.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from herdsman.drivers.base import InstanceState
from herdsman.health import HealthTracker, ProbeResult, probe
from herdsman.spec import HealthCheck

KEEP_RESULTS = 20  # probe results kept per instance, as evidence for a quarantine


class Watcher:
    def __init__(
        self,
        on_change: Callable[[str, str], None],
        exec_in: Callable[[str, Sequence[str], float], Awaitable[Any]] | None = None,
    ) -> None:
        # called with (instance id, "exited" | "unhealthy")
        self.on_change = on_change
        self.exec_in = exec_in  # the driver's `exec`: command checks run inside the instance
        self._fds: dict[str, int] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self.results: dict[str, collections.deque[ProbeResult]] = {}
        self.unhealthy: dict[str, str] = {}

    # exits ------------------------------------------------------------------------------------------
    def watch_exit(self, state: InstanceState) -> bool:
        """Start watching a running instance's process; False when it cannot be watched (no pid, or
        already gone: the caller then relies on listing)."""
        if state.id in self._fds or not state.pid or not hasattr(os, "pidfd_open"):
            return state.id in self._fds
        try:
            fd = os.pidfd_open(state.pid)
        except OSError:
            return False
        self._fds[state.id] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, state.id)
        return True

    def exited(self, instance_id: str) -> None:
        """From a driver's events (a task on another node has no pid here): the same as a pidfd."""
        if instance_id in self._fds or instance_id in self._probes or instance_id in self.results:
            self._exited(instance_id)
        else:
            self.on_change(instance_id, "exited")

    def _exited(self, instance_id: str) -> None:
        self._close(instance_id)
        self.stop_probing(instance_id)
        self.on_change(instance_id, "exited")

    def _close(self, instance_id: str) -> None:
        fd = self._fds.pop(instance_id, None)
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    # liveness ---------------------------------------------------------------------------------------
    def watch_health(self, state: InstanceState, check: HealthCheck) -> None:
        if state.id not in self._probes:
            self.results.setdefault(state.id, collections.deque(maxlen=KEEP_RESULTS))
            self._probes[state.id] = asyncio.create_task(self._liveness(state, check))

    async def _liveness(self, state: InstanceState, check: HealthCheck) -> None:
        tracker = HealthTracker.for_check(check)
        results = self.results[state.id]
        while True:
            inside = functools.partial(self.exec_in, state.id) if self.exec_in else None
            result = await probe(check, state.host, state.port, inside)
            results.append(result)
            if tracker.record(result) is False:
                self.unhealthy[state.id] = (
                    f"failed {tracker.streak_failed} liveness checks in a row (last: {result.detail})"
                )
                self.on_change(state.id, "unhealthy")
                return
            await asyncio.sleep(check.interval)

    def health_of(self, instance_id: str) -> str:
        """Its last liveness result as `herd ps` shows it ("healthy", "failing (why)"); empty when
        the agent has not probed it (no check, or not admitted yet)."""
        results = self.results.get(instance_id)
        if not results:
            return ""
        return results[-1].shown

    # both -------------------------------------------------------------------------------------------
    def watching(self) -> set[str]:
        return set(self._fds) | set(self._probes)

    def stop_probing(self, instance_id: str) -> None:
        task = self._probes.get(instance_id)
        if task is not None:
            task.cancel()

    def forget(self, instance_id: str) -> None:
        self._close(instance_id)
        task = self._probes.pop(instance_id, None)
        if task is not None:
            task.cancel()
        self.unhealthy.pop(instance_id, None)
        self.results.pop(instance_id, None)

    def close(self) -> None:
        for instance_id in list(self.watching()):
            self.forget(instance_id)
