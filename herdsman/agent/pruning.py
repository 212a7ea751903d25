"""The agent prunes on a schedule (`[retention] prune_every`), so images, unpacked root file
systems, old logs and snapshots never pile up on a machine nobody runs `herd prune` on.

It is the same prune as `herd prune` (deploy/retention.py): it takes every environment's deploy
lock, so it never sweeps under a rollout. While it runs the agent's owner lock is held too, so no
heal of this agent starts meanwhile (a heal would wait for the deploy lock the prune holds). The
sweep runs in a thread with its own event loop: hashing and deleting files must not stall the
agent's watchers. What it freed is an event (`herd events --kind prune`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from herdsman.agent.periodic import every
from herdsman.deploy.retention import Pruned, prune
from herdsman.spec import Project
from herdsman.state import StateStore


def summary(done: Pruned) -> str:
    """One line saying what a prune freed."""
    return (
        f"pruned {len(done.images)} image(s), {done.blobs} blob(s), {len(done.rootfs)} unpacked "
        f"image(s), {len(done.logs)} log(s), {len(done.snapshots)} snapshot(s): "
        f"{done.freed / 1e6:.1f} MB freed; kept {len(done.kept)} image(s)"
    )


class ScheduledPrune:
    def __init__(
        self,
        project: Callable[[], Project],
        state: StateStore,
        env: str,
        owner: asyncio.Lock,
        stopping: asyncio.Event,
    ) -> None:
        self.project = project  # the agent's current reading of herd.toml
        self.state = state
        self.env = env
        self.owner = owner
        self.stopping = stopping

    async def loop(self) -> None:
        """Prune every `prune_every` (read again each round; 0: never) until the agent stops."""

        def failed(exc: Exception) -> None:
            self.state.event(self.env, "prune", f"scheduled prune failed: {exc}")

        await every(lambda: self.project().stack.retention.prune_every, self.stopping, self.once, failed)

    async def once(self) -> Pruned:
        project = self.project()
        async with self.owner:
            done = await asyncio.to_thread(lambda: asyncio.run(prune(project)))
        self.state.event(
            self.env,
            "prune",
            summary(done),
            images=done.images,
            logs=done.logs,
            snapshots=done.snapshots,
            freed=done.freed,
        )
        return done
