"""`herd preview`: short-lived environments from production's bytes (deploy/preview.py).

Previews are made and removed in this process whether or not an agent runs: they never touch
what the agent owns (production's instances, volumes and routes); a running agent keeps each
live preview running (heals, quarantine) and removes it once expired and not kept. Every command
here first removes the previews that expired, so cleanup happens even where no agent runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from herdsman.spec import Project

if TYPE_CHECKING:
    from herdsman.deploy.preview import Preview, Previews

T = TypeVar("T")


def _run(
    project: Project,
    work: Callable[[Previews], Coroutine[Any, Any, T]],
    say: Callable[[str], None] | None,
    *,
    expire_first: bool = True,
) -> T:
    """Run ``work``; expired previews go first (no agent may run to remove them), or after it
    (``expire_first`` False: `keep` must reach an expired preview before its removal)."""
    from herdsman.deploy.preview import Previews
    from herdsman.facade.stack import declared_secrets

    previews = Previews(project, say=say, secrets=declared_secrets(project))
    try:

        async def both() -> T:
            if expire_first:
                await previews.expire()
            done = await work(previews)
            if not expire_first:
                await previews.expire()
            return done

        return asyncio.run(both())
    finally:
        previews.close()


def create(
    project: Project,
    name: str,
    *,
    release: int | None = None,
    from_files: bool = False,
    ttl: float | None = None,
    replicas: int = 1,
    copy_volumes: bool = False,
    host: bool = False,
    keep: bool = False,
    say: Callable[[str], None] | None = None,
) -> Preview:
    """Start preview ``name`` (see `Previews.create`); returns it once it serves."""
    return _run(
        project,
        lambda p: p.create(
            name,
            release=release,
            from_files=from_files,
            ttl=ttl,
            replicas=replicas,
            copy_volumes=copy_volumes,
            host=host,
            keep=keep,
        ),
        say,
    )


def keep(
    project: Project,
    name: str,
    *,
    duration: str | None = None,
    forever: bool = False,
    off: bool = False,
    say: Callable[[str], None] | None = None,
) -> Preview:
    """Keep preview ``name`` past its expiry for ``duration`` (e.g. "2h") or ``forever``, or
    (``off``) no longer. The duration is checked before anything is read or removed."""
    import time

    from herdsman.deploy.preview_spec import keep_until, preview_env
    from herdsman.errors import DeployError

    preview_env(name)  # the name is checked first
    if off and (duration is not None or forever):
        raise DeployError(
            "--off ends a keep: it takes no --for or --forever", hint="herd preview keep NAME --off"
        )
    until = None if off else keep_until(duration, forever, time.time())
    return _run(project, lambda p: p.keep(name, until, off=off), say, expire_first=False)


def url_of(route: Mapping[str, Any]) -> str:
    """Where a person reaches a preview's route (its own port, or its Host on production's)."""
    from herdsman.deploy.preview_spec import url_of as url

    return url(route)


def listing(project: Project) -> list[Preview]:
    """Every preview (the expired ones removed first)."""

    async def rows(previews: Previews) -> list[Preview]:
        return previews.all()

    return _run(project, rows, None)


def remove(project: Project, name: str, say: Callable[[str], None] | None = None) -> list[str]:
    """Remove preview ``name`` with its instances, route, volumes, logs and snapshots."""
    return _run(project, lambda p: p.remove(name), say)


def log_lines(project: Project, name: str, last: int | None = None) -> list[str]:
    """The preview's own logs, merged by time."""
    from herdsman import logs as log_store
    from herdsman.deploy.instances import log_root
    from herdsman.deploy.preview_spec import preview_env
    from herdsman.spec import herd_home

    root = log_root(herd_home(project), preview_env(name))
    return [line.render() for line in log_store.history(root, (), None, 0.0, last)]
