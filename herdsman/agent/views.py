"""What the API shows of the agent, built from what the agent observed (no Agent needed here)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from herdsman import __version__
from herdsman.agent.fleet import Fleet, Want
from herdsman.agent.schemas import DriftFound, Finding, Instance, ServiceStatus, Status
from herdsman.agent.watch import Watcher
from herdsman.deploy import verify
from herdsman.drivers.base import InstanceState
from herdsman.state import Release, StateStore


def status_of(
    env: str, state: StateStore, fleet: Fleet, release: Release | None, wants: Mapping[str, Want]
) -> Status:
    scales = state.scales(env)
    notes = state.notes(env)
    running: dict[str, int] = {}
    for service, seen in fleet.services.items():
        running[service] = sum(1 for s in seen.values() if s.running)
    services = {}
    for name, want in wants.items():
        mode = scales.get(name, (0, "release"))[1]
        set_by: Literal["release", "herd scale", "autoscaler"] = (
            "herd scale" if mode == "fixed" else "autoscaler" if mode == "auto" else "release"
        )
        services[name] = ServiceStatus(
            replicas=want.policy.replicas,
            set_by=set_by,
            running=running.get(name, 0),
            note=notes.get(name, ""),
        )
    return Status(
        env=env,
        pid=os.getpid(),
        version=__version__,
        release=release.number if release else None,
        services=services,
    )


def instances_of(listing: list[InstanceState], watcher: Watcher) -> list[Instance]:
    return [
        Instance(
            id=s.id,
            service=s.service,
            release=s.release,
            image=s.labels.get("herd.image", ""),
            state=s.state,
            detail=s.detail,
            address=s.address,
            started=s.started,
            unhealthy=watcher.unhealthy.get(s.id, ""),
            health=watcher.health_of(s.id),
            node=s.node,
            evicted=s.evicted,
        )
        for s in listing
    ]


def findings_of(checked: list[tuple[verify.Finding, str]]) -> list[Finding]:
    return [
        Finding(
            instance=f.instance,
            service=f.service,
            release=f.release,
            action=action,
            drift=[DriftFound(what=d.what, detail=d.detail) for d in f.drifts],
            unchecked=[DriftFound(what=d.what, detail=d.detail) for d in f.unchecked],
        )
        for f, action in checked
    ]
