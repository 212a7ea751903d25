"""`docker exec` for the docker driver: a command run inside a running container, bounded.

It gets what the container has: its read-only root, volumes, tmpfs /tmp, environment, working
directory and user (the engine's defaults for an exec). The engine has no call to stop an exec,
so at the timeout (or when the caller is cancelled) its process — a host pid, the engine being
local — and everything it started are killed; only the tail of the output is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from herdsman.drivers.base import OUTPUT_LIMIT, ExecResult
from herdsman.drivers.bounded import kill_tree
from herdsman.errors import DriverError


async def exec_in(
    api: Any, container_id: str, instance_id: str, argv: Sequence[str], timeout: float
) -> ExecResult:
    """Run ``argv`` in the container through the engine's low-level ``api`` (docker.APIClient)."""
    import docker.errors

    try:
        created = await asyncio.to_thread(
            api.exec_create, container_id, list(argv), stdout=True, stderr=True, stdin=False, tty=False
        )
    except docker.errors.APIError as exc:
        raise DriverError(f"Docker could not exec in {instance_id}: {exc.explanation or exc}") from None
    exec_id = created["Id"]
    tail = bytearray()

    def pump() -> dict[str, Any]:
        for chunk in api.exec_start(exec_id, stream=True):
            tail.extend(chunk)
            del tail[:-OUTPUT_LIMIT]
        return dict(api.exec_inspect(exec_id))

    running = asyncio.ensure_future(asyncio.to_thread(pump))
    try:
        info = await asyncio.wait_for(asyncio.shield(running), timeout)
    except TimeoutError:
        await asyncio.to_thread(_kill, api, exec_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 5)
        return ExecResult(None, tail.decode(errors="replace"), timed_out=True)
    except asyncio.CancelledError:
        await asyncio.to_thread(_kill, api, exec_id)
        raise
    except docker.errors.APIError as exc:
        raise DriverError(f"Docker could not exec in {instance_id}: {exc.explanation or exc}") from None
    code = info.get("ExitCode")
    return ExecResult(int(code) if code is not None else None, tail.decode(errors="replace"))


def _kill(api: Any, exec_id: str) -> None:
    with contextlib.suppress(Exception):
        pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
        if pid > 0:
            kill_tree(pid)
