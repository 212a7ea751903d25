"""Where a rollout happens and what names it gives: the environment, its stack and identity, the
image store and secret values (`Target`), route and instance names, and a log's last lines.

Shared by the executor and the migrator (which starts one-off instances of a release), so that
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdsman.deploy.instances import instance_spec
from herdsman.drivers.base import InstanceSpec, InstanceState
from herdsman.image.oci import ImageStore
from herdsman.state import ServiceRelease


@dataclass
class Target:
    env: str
    stack: str
    stack_id: str  # the stack's identity on a driver (see `Project.stack_id`)
    home: Path
    images: ImageStore
    secrets: Mapping[str, str]  # where secret values come from when a release has none of its own
    # the values a deploy handed over with a release, held in memory only (never on disk): heals
    # of that release start with them, so a rotated secret is not undone by a replacement
    release_secrets: dict[int, Mapping[str, str]] = field(default_factory=dict, repr=False)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # images never change

    def spec(
        self,
        instance_id: str,
        service: str,
        release: int,
        entry: ServiceRelease,
        secrets: Mapping[str, str] | None = None,
    ) -> InstanceSpec:
        """What the driver starts for ``instance_id`` of ``release`` (reads the image config)."""
        return instance_spec(
            instance_id=instance_id,
            stack=self.stack,
            stack_id=self.stack_id,
            env_name=self.env,
            service=service,
            release=release,
            entry=entry,
            image_config=self.configs.get(entry.image)
            or self.configs.setdefault(entry.image, self.images.config(entry.image)),
            home=self.home,
            secrets=self.secrets_of(release) if secrets is None else secrets,
        )

    def secrets_of(self, release: int) -> Mapping[str, str]:
        """The secret values instances of ``release`` start with."""
        return self.release_secrets.get(release, self.secrets)

    @property
    def selector(self) -> dict[str, str]:
        """The labels every instance of this environment of this stack carries, and no other's."""
        return {"herd.stack-id": self.stack_id, "herd.env": self.env}


def route_name(env: str, service: str) -> str:
    return f"{env}/{service}"


def id_maker(service: str, release: int, prefix: str) -> Callable[[], str]:
    """Instance ids that say what they are: web-3-a1f02 (service, release, rollout token, count)."""
    counter = iter(range(1, 1_000_000))
    return lambda: f"{service}-{release}-{prefix}{next(counter)}"


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 16384))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def quarantine_record(
    state: InstanceState,
    reason: str,
    *,
    command: Sequence[str] = (),
    health: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What a quarantined instance's record says of it (`herd quarantine inspect`): one shape,
    whoever quarantines it (the agent's heal, a failed canary)."""
    return {
        "service": state.service,
        "release": state.release,
        "image": state.labels.get("herd.image", ""),
        "labels": dict(state.labels),
        "command": list(command),
        "address": state.address,
        "node": state.node,  # a multi-node driver's node ("" on one machine)
        "pid": state.pid,
        "started": state.started,
        "reason": reason,
        "health": [dict(h) for h in health],
    }


def listed(ids: Sequence[str], most: int = 5) -> str:
    """Instance ids for a progress line or an event: all of a few, the first of many and a count
    (a burst of a thousand is not a thousand ids in one line)."""
    if len(ids) <= most:
        return ", ".join(ids)
    return f"{', '.join(ids[:most])} and {len(ids) - most} more"
