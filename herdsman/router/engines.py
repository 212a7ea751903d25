"""The one place that picks the router engine of a project (`[router] engine` in herd.toml).

Each engine is a module offering `ensure_pools(project, env, routes)` (its `deploy.execute.Pools`, with
the stack's routes of ``env`` set and the engine running) and `release_routes(home, env)` (`herd
down`: drop ``env``'s routes, stop the engine when none is left; True if it stopped). A module is
imported only when its engine is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from herdsman.spec import Project, herd_home

ENGINES = {
    "embedded": "herdsman.router.client",
    "haproxy": "herdsman.router.haproxy.engine",
}


def engine_name(project: Project) -> str:
    return project.stack.router.engine


def _module(name: str) -> Any:
    return importlib.import_module(ENGINES[name])


def ensure_router_pools(project: Project, env: str, routes: list[dict[str, Any]] | None = None) -> Any:
    """The routing layer of ``project`` for ``env``, started if need be, with ``env``'s routes set to
    ``routes`` (default: herd.toml's; a preview's are its own, on their own addresses)."""
    return _module(engine_name(project)).ensure_pools(project, env, routes)


def release_router(project: Project, env: str) -> bool:
    """``env``'s routes leave every engine that runs (the engine may have changed in herd.toml)."""
    home: Path = herd_home(project)
    stopped = False
    for name in ENGINES:
        stopped = _module(name).release_routes(home, env) or stopped
    return stopped
