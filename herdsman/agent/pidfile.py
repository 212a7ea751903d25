"""Whether an agent runs for an environment, and the lock that makes it the only one.

Kept apart from the daemon so that asking (every CLI command does, through the facade) does not
load the agent, FastAPI and the dashboard.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from herdsman.deploy.pidlock import lock_holder, pid_lock
from herdsman.errors import HerdError


def agent_lock(home: Path, env: str) -> contextlib.AbstractContextManager[None]:
    """One agent per environment; the kernel releases the lock when the agent dies."""
    return pid_lock(
        home / "run" / f"agent-{env}.pid",
        lambda holder: HerdError(
            f"an agent for environment {env!r} is already running (pid {holder})",
            hint="`herd down` stops it and the instances; `herd deploy` deploys through the running one",
        ),
    )


def agent_pid(home: Path, env: str) -> int | None:
    """The pid of the running agent of ``env``, if there is one."""
    return lock_holder(home / "run" / f"agent-{env}.pid")
