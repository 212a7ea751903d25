"""What the process driver needs to enter a running instance: how it was launched and its environment.

`exec` builds a new sandbox with exactly the instance's binds, so it needs the launch the
instance got. The record keeps it (bubblewrap's argv up to the command, or the plain working
directory); an instance started by an older herdsman has its launcher's own argv in /proc. The
environment is the record's, but secret values are kept there only as digests: they come from
the launcher process, which was started with them (never from a file).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from herdsman.drivers import procfs
from herdsman.errors import DriverError


def entry_from_proc(record: dict[str, Any]) -> dict[str, Any]:
    """How to enter an instance whose record does not say (an older herdsman started it): its
    launcher's argv up to the command (bubblewrap's), or its working directory."""
    pid, argv = int(record["pid"]), [str(a) for a in record.get("argv") or []]
    if record.get("sandboxed"):
        launched = procfs.cmdline(pid)
        if argv and len(launched) > len(argv) and launched[-len(argv) :] == argv:
            return {"sandbox": launched[: len(launched) - len(argv)], "cwd": "/"}
    else:
        with contextlib.suppress(OSError):
            return {"sandbox": None, "cwd": os.readlink(f"/proc/{pid}/cwd")}
    raise DriverError(f"cannot tell how instance {record['id']} was started", hint="replace it (herd deploy)")


def exec_env(record: dict[str, Any]) -> dict[str, str]:
    """The environment the instance was started with; secrets from its launcher, else left out.
    Blocking (it may wait a moment): call it in a thread."""
    env = {str(k): str(v) for k, v in dict(record.get("env") or {}).items()}
    secrets = [str(name) for name in record.get("secrets") or []]
    if not secrets:
        return env
    launched = procfs.environ(int(record["pid"]))
    for _ in range(25):  # empty for a moment while it execs again (a pyenv shim, a wrapper)
        if all(name in launched for name in secrets):
            break
        time.sleep(0.02)
        launched = procfs.environ(int(record["pid"]))
    for name in secrets:
        if name in launched:
            env[name] = launched[name]
        else:
            env.pop(name, None)
    return env
