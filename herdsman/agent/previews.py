"""The agent enforces previews' expiry: each round of its loop removes every preview past its
time to live (instances, route, volumes, logs: deploy/preview.py), so an orphaned preview never
outlives its TTL by more than a round, whatever CI event never came. A preview's removal takes
the preview's own deploy lock, never production's, so it runs beside heals and deploys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from herdsman.agent.periodic import every
from herdsman.deploy.preview import Previews
from herdsman.deploy.preview_spec import expired
from herdsman.spec import Project
from herdsman.state import StateStore

EXPIRE_EVERY = 2.0  # seconds between looks at the previews' expiry


class PreviewExpiry:
    def __init__(
        self,
        project: Callable[[], Project],
        state: StateStore,
        env: str,
        stopping: asyncio.Event,
        every: float = EXPIRE_EVERY,
    ) -> None:
        self.project = project  # the agent's current reading of herd.toml
        self.state = state
        self.env = env
        self.stopping = stopping
        self.every = every

    async def loop(self) -> None:
        def failed(exc: Exception) -> None:
            self.state.event(self.env, "preview", f"removing expired previews failed: {exc}")

        await every(lambda: self.every, self.stopping, self.once, failed)

    async def once(self) -> list[str]:
        """Remove the expired previews now; returns their names."""
        now = time.time()
        due = [p for p in self.state.previews() if expired(p, now) or p["state"] == "removing"]
        if not due:  # the usual round: one read of the agent's own store
            return []
        previews = Previews(self.project())
        try:
            return await previews.expire()
        finally:
            previews.close()
