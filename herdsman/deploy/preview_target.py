"""A preview as the target of a rollout: its own routes, and no rollout once it has expired.

`Deployment` (deploy/run.py) asks these of every environment: for production they do nothing; for
a preview (`preview-NAME`) the router is given the preview's own routes (its current release's: a
port of its own or a Host rule, never herd.toml's listener), a `herd deploy` to it keeps those
routes and its replica counts, and nothing is rolled out to a preview that expired (or never was).
"""

from __future__ import annotations

import time
from typing import Any

from herdsman.deploy.instances import is_preview
from herdsman.deploy.preview_spec import preview_content, preview_name, refusal
from herdsman.state import StateStore


def own_routes(state: StateStore, env: str) -> list[dict[str, Any]] | None:
    """A preview's routes are its current release's (its own port or Host), never herd.toml's
    (production's listener); None for every other environment (herd.toml's)."""
    if not is_preview(env):
        return None
    from herdsman.router.client import routes_of

    current = state.current_release(env)
    if current is None:
        return []
    return routes_of(env, {n: e.config for n, e in current.services().items()})


def refuse_expired(state: StateStore, env: str) -> None:
    """Nothing is rolled out to a preview that expired (or never was): the agent removes it."""
    if is_preview(env):
        refused = refusal(env, state.preview(preview_name(env)), time.time())
        if refused is not None:
            raise refused


def as_preview(state: StateStore, env: str, content: dict[str, Any]) -> dict[str, Any]:
    """`herd deploy` to a preview: the files with the preview's own routes and replica counts."""
    refuse_expired(state, env)
    row = state.preview(preview_name(env))
    assert row is not None
    current = state.current_release(env)
    replicas = {n: e.config.replicas for n, e in current.services().items()} if current else {}
    return preview_content(content, env, row["routes"], replicas)
