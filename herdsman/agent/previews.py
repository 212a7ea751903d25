"""The agent keeps previews running and enforces their expiry.

Each round of its loop (every 2 s) the agent first stops keeping the previews that are due to
go, removes every preview past its time to live unless it is kept (instances, route, volumes,
logs: deploy/preview.py), so an orphaned preview never outlives its TTL by more than a round,
whatever CI event never came, and then gives every live preview a keeper of its own
(agent/keeper.py): a crashed instance of a preview is replaced as production's are (the same
heal rules, through its own pool and route), and a failing or named one is quarantined. A
preview's removal and its keeper take the preview's own deploy lock, never production's, so they
run beside production's heals and deploys; a preview still being created (its rollout holds the
lock in the CLI's process) gets its keeper once it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from herdsman.agent.keeper import Keeper
from herdsman.agent.periodic import every
from herdsman.deploy.preview import Previews
from herdsman.deploy.preview_spec import expired
from herdsman.spec import Project
from herdsman.state import StateStore

EXPIRE_EVERY = 2.0  # seconds between looks at the previews' expiry
RETRY_FIRST, RETRY_MAX = 4.0, 120.0  # a keeper that failed starts again after these, doubling


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
        self.keepers: dict[str, tuple[Keeper, asyncio.Task[None]]] = {}  # preview env -> its keeper
        self.retry: dict[str, tuple[float, float]] = {}  # env -> (not before, delay): failed keepers

    async def loop(self) -> None:
        def failed(exc: Exception) -> None:
            self.state.event(self.env, "preview", f"keeping or removing previews failed: {exc}")

        await every(lambda: self.every, self.stopping, self.once, failed)

    async def once(self) -> list[str]:
        """Remove the expired previews now, and keep the live ones; returns the removed names."""
        now = time.time()
        rows = self.state.previews()
        due = [p for p in rows if expired(p, now) or p["state"] == "removing"]
        live = {p["env"] for p in rows if p["state"] == "ready" and not expired(p, now)}
        for env, (_keeper, task) in list(self.keepers.items()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                delay = self._failed(env, now)
                self.state.event(
                    env, "agent", f"keeping {env} failed: {task.exception()}; starting again in {delay:g}s"
                )
            if env not in live or task.done():  # going, or a keeper that ended: the next is fresh
                await self.release(env)
            elif env in self.retry and now > self.retry[env][0] + RETRY_MAX:
                del self.retry[env]  # kept running a good while since it last failed
        gone: list[str] = []
        if due:  # the usual round: one read of the agent's own store, and nothing to remove
            previews = Previews(self.project())
            try:
                gone = await previews.expire()
            finally:
                previews.close()
            rows = self.state.previews()
            live = {p["env"] for p in rows if p["state"] == "ready" and not expired(p, now)}
        for env in list(self.retry):
            if env not in live:
                del self.retry[env]
        for env in sorted(live - set(self.keepers)):
            if self.retry.get(env, (0.0, 0.0))[0] > now:
                continue  # failed a moment ago: not again every round (nor an event each time)
            try:
                await self._keep(env)
            except Exception as exc:  # reported; tried again later, the others go on
                delay = self._failed(env, now)
                self.state.event(env, "agent", f"keeping {env} failed to start: {exc}; again in {delay:g}s")
        return gone

    def _failed(self, env: str, now: float) -> float:
        """The wait before a failed keeper of ``env`` starts again: doubling, from RETRY_FIRST."""
        delay = min(RETRY_MAX, self.retry[env][1] * 2) if env in self.retry else RETRY_FIRST
        self.retry[env] = (now + delay, delay)
        return delay

    async def _keep(self, env: str) -> None:
        # in a thread: wiring the router (Deployment.open) blocks, and runs a loop of its own
        keeper = await asyncio.to_thread(Keeper, self.project(), env)
        task = asyncio.create_task(keeper.keep(), name=f"keep {env}")
        self.keepers[env] = (keeper, task)
        self.state.event(env, "agent", f"the agent keeps {env} running (heals, quarantine)")

    async def release(self, env: str) -> None:
        """Stop keeping preview ``env`` (it is going, or the agent stops); what runs is left alone."""
        found = self.keepers.pop(env, None)
        if found is None:
            return
        keeper, task = found
        keeper.stop()
        with contextlib.suppress(Exception):  # it failed, or would not stop in 30 s (then cancelled)
            await asyncio.wait_for(task, 30)
        keeper.deployment.state.close()

    async def close(self) -> None:
        for env in list(self.keepers):
            await self.release(env)

    def keeper_of(self, instance_id: str) -> Keeper | None:
        """The keeper of the preview ``instance_id`` runs in (None: not a kept preview's)."""
        for keeper, _task in self.keepers.values():  # the one that has seen it, if one has
            if keeper.fleet.get(instance_id) is not None:
                return keeper
        env = env_of(instance_id, self.keepers)
        return self.keepers[env][0] if env is not None else None


def env_of(instance_id: str, envs: Iterable[str]) -> str | None:
    """Which of the preview environments ``envs`` instance ``instance_id`` belongs to, by its name
    alone (a keeper that has listed it knows better: previews a and a-web both match
    preview-a-web-1-…). Instance ids start with their environment and "-": the longest such
    environment is taken (preview-pr-1-web-1-… is preview-pr-1's, not preview-pr's)."""
    matches = [env for env in envs if instance_id.startswith(f"{env}-")]
    return max(matches, key=len) if matches else None
