"""What the agent has seen of what runs, in one object its parts share explicitly.

The fleet (what runs, and which services changed), the watcher's findings (exits, failing liveness
checks), drift findings, the backoff of crash-looping images and the counters for /metrics are
observations, not decisions. The healer, the drift checker and the API are handed this object (and
the executor, driver, state store and quarantine they act through) instead of reaching back into
the agent, so each can be read, and tested, on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from herdsman.agent.fleet import Backoff, Fleet
from herdsman.agent.metrics import AgentCounts
from herdsman.agent.watch import Watcher


@dataclass
class Observed:
    watcher: Watcher
    fleet: Fleet = field(default_factory=Fleet)
    backoff: Backoff = field(default_factory=Backoff)
    drifted: dict[str, str] = field(default_factory=dict)  # instance -> what drifted
    counts: AgentCounts = field(default_factory=AgentCounts)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set: plan the dirty services now

    def touch(self, service: str) -> None:
        """Plan ``service`` again at the next pass, and make that pass come now."""
        self.fleet.touch(service)
        self.wake.set()

    def later(self, service: str, delay: float) -> None:
        """Plan ``service`` again in ``delay`` seconds."""
        asyncio.get_running_loop().call_later(delay, self.touch, service)

    def forget(self, service: str, instance: str) -> None:
        """An instance is gone for good (retired, quarantined, a failed replacement)."""
        self.watcher.forget(instance)
        self.fleet.forget(service, instance)
        self.drifted.pop(instance, None)
