"""What the docker and swarm drivers take from the engine's own machine: a plain local volume's
data (snapshots, backups and restores copy it) and a `docker logs -f` writing into the log store.

Both drivers run next to a local engine (one machine, or the Swarm manager's node), so both read
the same way; a volume with mount options, or an engine elsewhere, is refused with a hint.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from herdsman.errors import DriverError


def local_volume_path(volume: Any, name: str, hint: str) -> Path:
    """Where the docker volume ``volume`` (herd volume ``name``) keeps its data on this machine.
    Only a plain `local` volume (what herdsman creates) keeps it there: one with mount options
    (nfs, tmpfs, a device) has it elsewhere whenever no container uses it."""
    if volume.attrs.get("Driver") != "local" or volume.attrs.get("Options"):
        raise DriverError(
            f"volume {name} ({volume.name}) is not a plain local volume: its data is not on this "
            "machine's disk while no container uses it",
            hint="snapshots, backups and restores work on volumes herdsman created",
        )
    path = Path(str(volume.attrs.get("Mountpoint", "")))
    if not path.is_dir():
        raise DriverError(f"volume {name}'s data ({path}) is not on this machine", hint=hint)
    return path


def follow_into(docker_cli: str | None, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """`docker ARGV` (a `logs -f --timestamps`) appending to the log file, in its own session: it
    outlives the agent and ends with what it follows."""
    if docker_cli is None:
        raise DriverError("the docker command is missing", hint="apt-get install docker.io")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return subprocess.Popen(
            [docker_cli, *argv],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
        )
    finally:
        os.close(fd)
