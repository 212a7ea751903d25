"""What the read-only commands show, as plain rows: releases, instances, events, logs, quarantine.

Each function opens what it needs (state store, driver, log store), reads, and returns data the
face formats; nothing here prints. `herd rollback`'s warning about migrated data is here too, as
a `RollbackPreview`, so the CLI can ask before anything changes.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herdsman.errors import HerdError
from herdsman.facade.glance import InstanceRow, Instances, agent_rows
from herdsman.facade.stack import agent_running, environment_of
from herdsman.spec import Project, herd_home

if TYPE_CHECKING:
    from herdsman.deploy.diff import Change, LayerDiff
    from herdsman.deploy.run import Deployment
    from herdsman.drivers.base import InstanceState
    from herdsman.quarantine import Kept as Kept  # re-exported: what the faces format
    from herdsman.quarantine import Quarantine as Quarantine
    from herdsman.state import StateStore


def _state(project: Project) -> StateStore:
    from herdsman.state import StateStore

    return StateStore(herd_home(project) / "state.db")


@dataclass(frozen=True)
class ReleaseRow:
    number: int
    created: float
    images: dict[str, str]  # service -> image digest
    changed: list[str]  # what differs from the release before it
    status: str
    reason: str
    trigger: str
    by: str = ""  # who asked for it (user@host), "" when not recorded


def release_history(project: Project, env: str | None = None) -> list[ReleaseRow]:
    """`herd releases`: every release of the environment, oldest first, with what it changed."""
    from herdsman.deploy.release import changed_keys

    rows, previous = [], None
    for release in _state(project).releases(environment_of(project, env)):
        images = {name: entry.image for name, entry in release.services().items()}
        changed = changed_keys(previous, release.content)
        rows.append(
            ReleaseRow(
                release.number,
                release.created,
                images,
                changed,
                release.status,
                release.reason,
                release.trigger,
                release.by,
            )
        )
        previous = release.content
    return rows


def instances(
    project: Project,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    agent_listing: list[InstanceRow] | None = None,
    asked: bool = False,
) -> Instances:
    """Every instance of the environment with its health. When an agent runs, its own listing and
    its last liveness check of each instance (one call: a thousand instances are neither listed
    twice nor probed again for one `herd ps`); else listed here and each probed now with its
    release's check. Only what the agent has not checked (no check, not admitted yet) is probed.
    ``asked``: the caller already asked the agent (`glance.instances`), which gave ``agent_listing``
    (None: no agent answered)."""
    import asyncio

    name = environment_of(project, env)
    rows = agent_listing if asked else agent_rows(herd_home(project), name)
    by_agent = rows is not None
    deployment: Deployment | None = None
    if rows is None or any(not r.health for r in rows):
        from herdsman.deploy.run import Deployment

        deployment = Deployment(project, env, driver_name=driver_name)
    state = deployment.state if deployment is not None else _state(project)
    try:
        if rows is None:
            assert deployment is not None
            found = asyncio.run(deployment.driver.list(deployment.executor.target.selector))
            rows = [_row(i) for i in found]
        unchecked = [r for r in rows if not r.health]
        if unchecked:
            assert deployment is not None
            health = asyncio.run(_probe_all(deployment, unchecked))
            rows = [dataclasses.replace(r, health=health[r.id]) if not r.health else r for r in rows]
        return Instances(
            name,
            rows,
            state.scales(name),
            state.notes(name),
            health_by_agent=by_agent and len(unchecked) < len(rows),
        )
    finally:
        state.close()


def _row(i: InstanceState) -> InstanceRow:
    health = "" if i.state == "running" else "-"
    return InstanceRow(
        i.id,
        i.service,
        i.release,
        i.labels.get("herd.image", ""),
        i.state,
        i.detail,
        health,
        i.started,
        i.address,
        i.node,
        i.evicted,
    )


PROBES_AT_ONCE = 64  # `herd ps` probes; a thousand sockets at once would near the open-files limit


async def _probe_all(deployment: Deployment, rows: list[InstanceRow]) -> dict[str, str]:
    """One health probe per running instance, a bounded number at a time, with its release's check."""
    import asyncio

    from herdsman.health import probe

    slots = asyncio.Semaphore(PROBES_AT_ONCE)

    async def one(row: InstanceRow) -> tuple[str, str]:
        if row.state != "running":
            return row.id, "-"
        try:
            entry = deployment.state.release(deployment.env, row.release).services()[row.service]
        except (HerdError, KeyError):
            return row.id, "?"
        check = entry.config.health
        if check is None:
            return row.id, "no check"
        host, _, port = row.address.rpartition(":")
        host = host.strip("[]")  # an IPv6 address is written [::1]:PORT
        inside = functools.partial(deployment.driver.exec, row.id)  # a command check runs in it
        async with slots:
            result = await probe(check, host or "127.0.0.1", int(port) if port.isdigit() else None, inside)
        return row.id, result.shown

    return dict(await asyncio.gather(*(one(r) for r in rows)))


@dataclass(frozen=True)
class RollbackPreview:
    """What a rollback would do to data, known before anything changes."""

    env: str
    source: int  # the release whose content is rolled out again
    migrated: list[tuple[int, str]]  # (release, service) of each migration since
    snapshots: dict[str, Path]  # volume -> the snapshot taken before the first of them
    missing: list[Path]  # snapshots that are gone (pruned)


def rollback_preview(
    project: Project, env: str | None = None, release: int | None = None, *, driver_name: str | None = None
) -> RollbackPreview:
    from herdsman.deploy.data import migrations_after, snapshots_to_restore
    from herdsman.deploy.run import Deployment

    deployment = Deployment(project, env, driver_name=driver_name)
    try:
        source = deployment.rollback_source(release).number
        migrated = migrations_after(deployment, source)
        snapshots = snapshots_to_restore(deployment, source) if migrated else {}
        missing = [path for path in snapshots.values() if not path.is_dir()]
        return RollbackPreview(
            deployment.env, source, [(m.release, m.service) for m in migrated], snapshots, missing
        )
    finally:
        deployment.state.close()


def events(
    project: Project, env: str | None = None, *, last: int = 50, kinds: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The last ``last`` events of the environment (of ``kinds``, when given), oldest first."""
    return _state(project).events(environment_of(project, env), last=last, kinds=kinds)


def follow_events(
    project: Project, env: str | None = None, *, after: int = 0, kinds: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """Events newer than id ``after``, as they happen, forever: from a running agent by long
    polling its API (it answers the moment one is recorded), else from the state store."""
    from herdsman.client import AgentClient

    name = environment_of(project, env)
    home = herd_home(project)
    state = _state(project)
    while True:
        if agent_running(project, name) is not None:
            with AgentClient.for_home(home, name) as client:
                batch = client.events(after, wait=25)
        else:
            time.sleep(0.5)
            batch = state.events(name, after=after)
        for event in batch:
            after = max(after, int(event["id"]))
            if not kinds or event["kind"] in kinds:
                yield event


def _log_root(project: Project, services: tuple[str, ...]) -> Path:
    """The log store; each name must be a service or an instance it holds a log of."""
    root = herd_home(project) / "logs"
    unknown = sorted(
        n for n in set(services) - set(project.stack.service) if not any(root.glob(f"*/{glob.escape(n)}.log"))
    )
    if unknown:
        raise HerdError(
            f"no service or instance {', '.join(unknown)} in {project.file.name}",
            hint=f"services: {', '.join(sorted(project.stack.service)) or 'none'}; "
            "instances: `herd ps` (and `herd quarantine` for the kept ones)",
        )
    return root


def log_lines(
    project: Project,
    services: tuple[str, ...] = (),
    *,
    release: int | None = None,
    since: float = 0.0,
    last: int | None = None,
) -> Iterator[str]:
    """`herd logs`: the lines of SERVICES' instances (replaced ones too) newer than ``since``
    (a Unix time), merged by time, rendered; with ``last``, only the last ``last`` of them."""
    from herdsman import logs as log_store

    root = _log_root(project, services)
    for line in log_store.history(root, services, release, since, last):
        yield line.render()


def follow_logs(
    project: Project, services: tuple[str, ...] = (), *, release: int | None = None
) -> Iterator[str]:
    """New log lines as they arrive, forever (new instances are picked up as they start)."""
    from herdsman import logs as log_store

    root = _log_root(project, services)
    for line in log_store.follow(root, services, release):
        yield line.render()


def quarantine(project: Project) -> Quarantine:
    """The quarantined instances of the project (plain files under .herd/quarantine)."""
    from herdsman.quarantine import Quarantine

    return Quarantine(herd_home(project))


def api_schema() -> dict[str, Any]:
    """The OpenAPI schema of the agent's API."""
    from herdsman.agent.api import openapi_schema

    return openapi_schema()


@dataclass(frozen=True)
class ReleaseDiff:
    env: str
    first: int
    second: int
    changes: list[Change]
    layers: dict[str, LayerDiff | None]  # per service whose image changed; None: not in this store


def release_diff(project: Project, first: int, second: int, env: str | None = None) -> ReleaseDiff:
    """`herd diff A B`: config values that changed, and each changed image layer by layer."""
    from herdsman.deploy.diff import config_changes, layer_diff, layers_of
    from herdsman.image.bake import image_store

    name = environment_of(project, env)
    state = _state(project)
    a, b = state.release(name, first), state.release(name, second)
    store = image_store(project)
    layers: dict[str, LayerDiff | None] = {}
    old, new = a.services(), b.services()
    for service, entry in sorted(new.items()):
        before = old.get(service)
        if before is None or before.image == entry.image:
            continue
        try:
            sides = [layers_of(store.manifest(d), store.config(d)) for d in (before.image, entry.image)]
        except (HerdError, OSError, KeyError):
            layers[service] = None
            continue
        layers[service] = layer_diff(*sides)
    return ReleaseDiff(name, first, second, config_changes(a.content, b.content), layers)
