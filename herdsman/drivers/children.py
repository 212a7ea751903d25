"""The process driver's own children (instances; older records' stampers): exit codes, reaping.

An instance started by this process is a `Popen` child: its exit code is known only to us, and it
must be waited for (else it stays a zombie, alive to /proc). An instance adopted from an older
agent is not our child: /proc alone says whether it runs (`procfs.alive`, pid with its start time).
One subtlety earned in CI: `Popen.poll` answers None while another thread waits for the same child
(a concurrent inspect, a stop), so the exit code of a child that is gone is *waited* for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from herdsman.drivers import procfs


class Children:
    def __init__(self) -> None:
        self._by_pid: dict[int, subprocess.Popen[bytes]] = {}

    def add(self, child: subprocess.Popen[bytes]) -> None:
        self._by_pid[child.pid] = child

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a child of ours that has ended; None while it runs or if not ours."""
        child = self._by_pid.get(pid)
        return child.poll() if child is not None else None

    def running(self, pid: int, ticks: int | None) -> bool:
        return self.exit_code(pid) is None and procfs.alive(pid, ticks)

    def settled_exit_code(self, pid: int) -> int | None:
        """The exit code of a child of ours that is gone, blocking for the moment another thread
        holds it (see the module docstring)."""
        child = self._by_pid.get(pid)
        if child is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(timeout=2)
        return None

    def wait_gone(self, pid: int, ticks: int | None, seconds: float) -> bool:
        """Wait up to ``seconds`` for the process to end; say whether it did."""
        deadline = time.monotonic() + seconds
        while self.running(pid, ticks):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def reap(self, pid: int, ticks: int | None, wait: float) -> None:
        """Give the process ``wait`` seconds to end, then SIGKILL it; collect it if it is ours."""
        if pid <= 0:
            return
        if not self.wait_gone(pid, ticks, wait):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child = self._by_pid.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
