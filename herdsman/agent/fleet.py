"""What the agent believes runs, and what to do about it: pure, so it is tested at 10,000 instances.

The agent feeds `Fleet` what it observes (an instance exited, a liveness check failed, drift was
found, a full listing from the driver). Each observation that changes something marks its service
*dirty*; a reconcile pass plans only the dirty services, so a pass costs in proportion to what
changed, not to the number of instances.

For a dirty service `heal_plan` returns rollout steps (see `deploy.plan`) plus one step of its own:

    {"op": "quarantine", "service": s, "instances": [id], "reason": why}

An instance to quarantine (failing liveness checks, or drifted) is taken out of the pool first,
its replacement is started and admitted, and only then is it stopped, its evidence kept. An exited
instance is replaced at once (`Backoff` delays only an image whose replacements keep failing). An
instance whose node was drained or lost (`evicted`) is replaced as an old release's is: its
replacement (placed on another node by the driver) is admitted before it leaves the pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from herdsman.deploy.plan import Policy, Running, Step, plan_service

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class Seen:
    """One instance as the agent sees it."""

    id: str
    service: str
    release: int
    running: bool
    unhealthy: str = ""  # why its liveness checks failed, when they did
    drifted: str = ""  # what drifted, when it did
    started: float = 0.0
    detail: str = ""  # e.g. "exited with code 137"
    evicted: str = ""  # why it must move to another node (its node drained or lost)
    baseline: bool = False  # a canary's fresh baseline left behind: retired first, never kept


@dataclass
class Fleet:
    services: dict[str, dict[str, Seen]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def observe(self, seen: Seen) -> None:
        mine = self.services.setdefault(seen.service, {})
        if mine.get(seen.id) != seen:
            mine[seen.id] = seen
            self.dirty.add(seen.service)

    def forget(self, service: str, instance: str) -> None:
        mine = self.services.get(service, {})
        if mine.pop(instance, None) is not None:
            self.dirty.add(service)

    def sync(self, everything: Iterable[Seen]) -> None:
        """A full listing: add and update what is listed, forget what is not."""
        listed: dict[str, dict[str, Seen]] = {}
        for seen in everything:
            listed.setdefault(seen.service, {})[seen.id] = seen
        for service in set(self.services) | set(listed):
            now = listed.get(service, {})
            if self.services.get(service, {}) != now:
                self.dirty.add(service)
            self.services[service] = now

    def get(self, instance: str) -> Seen | None:
        for mine in self.services.values():
            if instance in mine:
                return mine[instance]
        return None

    def touch(self, service: str) -> None:
        """Plan this service again (e.g. its wanted count changed)."""
        self.dirty.add(service)

    def take_dirty(self) -> dict[str, list[Seen]]:
        """The dirty services with their instances; they are clean afterwards."""
        out = {name: list(self.services.get(name, {}).values()) for name in sorted(self.dirty)}
        self.dirty.clear()
        return out


@dataclass(frozen=True)
class Want:
    """What should run of one service: its release and how many instances, and how to roll."""

    release: int
    policy: Policy


def heal_plan(service: str, seen: list[Seen], want: Want, new_id: Callable[[], str]) -> list[Step]:
    """The steps that bring one service back to ``want``: replace what exited, quarantine what is
    unhealthy or drifted, scale to the wanted count, and roll out instances of other releases.

    An unhealthy instance leaves the pool first (it fails requests). A drifted one still answers,
    so it is replaced like an instance of an old release (surge first, no gap in the pool) and
    quarantined where it would have been retired."""
    sick = {s.id: s.unhealthy for s in seen if s.running and s.unhealthy}
    drifted = {s.id: s.drifted for s in seen if s.running and not s.unhealthy and s.drifted}
    moving = {s.id for s in seen if s.running and s.evicted}
    rest = [
        Running(s.id, -1 if s.id in drifted or s.id in moving else s.release, s.running, s.baseline)
        for s in seen
        if s.id not in sick
    ]
    policy = want.policy
    if policy.strategy == "canary" and all(r.release in (want.release, -1) for r in rest):
        # replacing instances of the release itself (drifted, on a node that leaves): nothing new
        # to judge, so no canary (it would weigh a release "-1" and start a baseline of it)
        policy = dataclasses.replace(policy, strategy="rolling")
    steps: list[Step] = []
    if sick and want.policy.routed:
        steps.append({"op": "pool", "service": service, "instances": [r.id for r in rest if r.serving]})
    for step in plan_service(service, rest, want.release, policy, new_id):
        if step["op"] != "retire" or not drifted.keys() & set(step["instances"]):
            steps.append(step)
            continue
        others = [i for i in step["instances"] if i not in drifted]
        if others:
            steps.append({**step, "instances": others})
        for instance in step["instances"]:
            if instance in drifted:
                steps.append(
                    {
                        "op": "quarantine",
                        "service": service,
                        "instances": [instance],
                        "reason": drifted[instance],
                    }
                )
    for instance, reason in sick.items():
        steps.append(
            {
                "op": "quarantine",
                "service": service,
                "instances": [instance],
                "reason": reason,
                "unhealthy": True,
            }
        )
    return steps


@dataclass
class Backoff:
    """Exponential backoff for an image that keeps crashing; a crash is otherwise replaced at once.

    "Keeps crashing" means its replacements fail to become healthy: the n-th failed replacement in a
    row waits BACKOFF_FIRST * 2**(n-2) seconds (capped) before the next start. An instance that died
    after it had been admitted is replaced at once however often that happens (that is chaos, not a
    broken image), and a replacement that becomes healthy ends the streak.
    """

    streak: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)
    reason: dict[str, str] = field(default_factory=dict)

    def failed(self, service: str, now: float, why: str) -> float:
        """A replacement failed; return how long to wait before starting the next one."""
        count = self.streak[service] = self.streak.get(service, 0) + 1
        delay = 0.0 if count < 2 else min(BACKOFF_FIRST * 2 ** (count - 2), BACKOFF_MAX)
        self.not_before[service] = now + delay
        self.reason[service] = why
        return delay

    def healthy(self, service: str) -> None:
        """A replacement became healthy: the streak is over."""
        self.streak.pop(service, None)
        self.not_before.pop(service, None)
        self.reason.pop(service, None)

    def wait(self, service: str, now: float) -> float:
        return max(0.0, self.not_before.get(service, 0.0) - now)

    def note(self, service: str, now: float) -> str:
        """What `herd ps` says: "crash loop: 3 failed replacements (...); next start in 2s"."""
        count = self.streak.get(service, 0)
        if count < 2:
            return ""
        wait = self.wait(service, now)
        tail = f"; next start in {wait:.0f}s" if wait >= 1 else ""
        return f"crash loop: {count} failed replacements in a row ({self.reason.get(service, '')}){tail}"
