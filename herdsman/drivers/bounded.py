"""Running one short command to its end, bounded in time and in output: what `Driver.exec` needs.

A health check runs every second or so for the life of an instance, so it must never pile up: the
command gets a session (a process group) of its own and the whole group is killed at the timeout
(or when the caller is cancelled), not only its first process — a `sh -c` whose child hangs would
otherwise keep the pipe open and outlive every timeout. Only the tail of its output is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

from herdsman.drivers import procfs
from herdsman.drivers.base import OUTPUT_LIMIT, ExecResult


async def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    limit: int = OUTPUT_LIMIT,
) -> ExecResult:
    """Run ``argv`` (stdin closed, stderr into stdout); kill its process group after ``timeout``."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return ExecResult(None, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
    tail = bytearray()

    async def drain() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-limit]
        await process.wait()

    try:
        async with asyncio.timeout(timeout):
            await drain()
    except TimeoutError:
        await _end(process)
        return ExecResult(None, tail.decode(errors="replace"), timed_out=True)
    except BaseException:  # cancelled (the caller's own timeout, a shutdown): nothing may outlive it
        await _end(process)
        raise
    return ExecResult(process.returncode, tail.decode(errors="replace"))


async def _end(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await process.wait()


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process descending from it (a command run in a container, whose
    process group the engine does not give us)."""
    for member in [pid, *procfs.descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
