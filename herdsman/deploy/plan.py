"""Planning a rollout, purely: `plan(current, target, policy) -> steps`.

No I/O here, so the rules are property-tested: the planner never lets the number of instances
taking traffic drop below `replicas - max_unavailable`, never runs more than `replicas + max_surge`,
and always ends with exactly `replicas` instances of the target release and none of any other.
Resuming an interrupted rollout is planning again from what actually runs, so a step list never
needs to be "continued" by a new agent.

Steps are plain dicts (they are written ahead into the state store as JSON):

    {"op": "start",  "service": s, "instances": [ids]}   start new instances of the target release
    {"op": "admit",  "service": s, "instances": [ids]}   wait until healthy; fail the rollout if not
    {"op": "pool",   "service": s, "instances": [ids]}   the complete pool the router sends traffic to
    {"op": "retire", "service": s, "instances": [ids]}   drain (already out of the pool), then stop
    {"op": "grow",   "service": s, "instances": [ids], "pool": [ids]}
                     a burst (at least BURST new instances, none to replace): start them at an
                     adaptive pace, each joining the pool once admitted; the pool ends as "pool"
                     (absent for a service with no route). See deploy/burst.py
    {"op": "baseline", "service": s, "instances": [ids], "release": r}
                     start and admit a canary's fresh baseline: new instances of the serving
                     release ``r`` (labelled herd.baseline = fresh); if they cannot start, the
                     canary is judged against the serving instances instead (deploy/canary.py)
    {"op": "weigh",  "service": s, "instances": [ids], "baseline": [ids], "weight": w,
                     "serving": [ids], "against": "fresh" | "serving", "why": text}
                     the pool is all three; the canary (``instances``) gets w% of requests exactly,
                     a fresh baseline w% too and the serving instances the rest (none at 50%);
                     against "serving", ``baseline`` is every instance of the serving release and
                     ``why`` says why not a fresh one
    {"op": "judge",  the weigh step's fields and "look": k}
                     wait `canary_pause`, compare the canary with ``baseline`` over it
                     (deploy/verdict.py); a fail fails the rollout, which reverts
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from herdsman.spec import Service

Step = dict[str, Any]

BURST = 10  # new instances at once, beside no old ones, that start as a burst (a `grow` step)


@dataclass(frozen=True)
class Running:
    """One instance as the planner sees it (only healthy, running ones count as serving)."""

    id: str
    release: int
    serving: bool = True
    baseline: bool = False  # a canary's fresh baseline (label herd.baseline): never kept past it


@dataclass(frozen=True)
class Policy:
    replicas: int
    strategy: str = "rolling"  # rolling | blue-green | canary
    max_surge: int = 1
    max_unavailable: int = 0
    routed: bool = True
    canary_weights: tuple[int, ...] = (10, 50, 100)
    baseline: str = "fresh"  # a canary's baseline: fresh instances of the serving release, or "serving"
    max_instances: int | None = None  # `[service.NAME.scale] max`: no more run at once


def effective_policy(config: Service, scale: tuple[int, str] | None = None) -> Policy:
    """How one service of a release rolls: its deploy policy, with a replica count set at run time
    (``scale``: `herd scale` or the autoscaler, as the state store keeps it) winning over the
    release's. The one place this rule lives: deploys, heals and the autoscaler all ask it."""
    deploy = config.deploy
    return Policy(
        replicas=scale[0] if scale is not None else config.replicas,
        strategy=deploy.strategy,
        max_surge=deploy.max_surge,
        max_unavailable=deploy.max_unavailable,
        routed=config.route is not None,
        canary_weights=tuple(deploy.canary_weights),
        baseline=config.canary.baseline,
        max_instances=config.scale.max if config.scale is not None else None,
    )


def plan_release(
    current: Mapping[str, Sequence[Running]],
    release: int,
    policies: Mapping[str, Policy],
    new_id: Callable[[str], Callable[[], str]],
    services: Collection[str] | None = None,
    fresh_id: Callable[[str, int], Callable[[], str]] | None = None,
) -> list[Step]:
    """The steps from what runs (``current``, by service) to ``release`` with ``policies`` (one per
    service of the release). With ``services``, only those; otherwise the instances of services that
    left the stack are retired too. ``fresh_id(service, release)`` names a canary's fresh baseline
    (instances of the serving ``release``)."""
    steps: list[Step] = []
    for name, policy in policies.items():
        if services is None or name in services:
            makes = functools.partial(fresh_id, name) if fresh_id is not None else None
            steps += plan_service(name, current.get(name, ()), release, policy, new_id(name), makes)
    if services is None:
        for name, running in sorted(current.items()):
            if name not in policies and running:
                steps += retire_removed(name, [r.id for r in running])
    return steps


def retire_removed(service: str, ids: Sequence[str]) -> list[Step]:
    """A service that left the stack: its instances retire (its route went with it)."""
    return [{"op": "retire", "service": service, "instances": list(ids)}]


def plan_service(
    service: str,
    current: Sequence[Running],
    release: int,
    policy: Policy,
    new_id: Callable[[], str],
    fresh_id: Callable[[int], Callable[[], str]] | None = None,
) -> list[Step]:
    """The steps that take one service from ``current`` to ``policy.replicas`` instances of ``release``.
    A canary's fresh baseline never stays: outside a canary that reuses it, it retires first."""
    fresh = [i for i in current if i.baseline]
    keep = [i.id for i in current if i.release == release and i.serving and not i.baseline]
    broken = [i.id for i in current if i.release == release and not i.serving and not i.baseline]
    old = [i.id for i in fresh] + [i.id for i in current if i.release != release and not i.baseline]
    steps: list[Step] = []
    if broken:
        steps += _retire(service, broken, keep + old, policy.routed)
    if len(keep) > policy.replicas:  # scale in: retire the newest extras
        extra = keep[policy.replicas :]
        keep = keep[: policy.replicas]
        steps += _retire(service, extra, keep + old, policy.routed)
    if policy.strategy == "blue-green":
        return steps + _blue_green(service, keep, old, policy, new_id)
    if policy.strategy == "canary" and policy.routed and len(old) > len(fresh) and policy.replicas:
        serving = [i for i in current if i.release != release and not i.baseline]
        makes = fresh_id or (lambda _release: lambda: f"{new_id()}-b")
        return steps + _canary(service, keep, serving, fresh, policy, new_id, makes)
    return steps + _rolling(service, keep, old, policy, new_id)


def _canary(
    service: str,
    new: list[str],
    serving: Sequence[Running],
    fresh: Sequence[Running],
    policy: Policy,
    new_id: Callable[[], str],
    fresh_id: Callable[[int], Callable[[], str]],
) -> list[Step]:
    """A few instances of the new release (the canary: its first weight's share of the replicas,
    at least one, started beside the old ones whatever max_surge says) take exactly each weight
    short of 100 of the requests in turn, each step judged over the same window against a
    baseline: as many fresh instances of the serving release, at the same weight (so both sides
    are as warm), where `fresh_refusal` and the weight allow, else the serving instances. Then
    the rest rolls as a rolling deploy does, the fresh baseline retiring first with the old
    instances. Planned again after a crash, the canary starts over from its first weight (its
    instances and its fresh baseline are kept)."""
    size = max(1, min(policy.replicas, math.ceil(policy.replicas * policy.canary_weights[0] / 100)))
    batch = [new_id() for _ in range(max(0, size - len(new)))]
    canary = new + batch
    old = [i.id for i in serving]
    steps: list[Step] = []
    if batch:
        steps += [
            {"op": "start", "service": service, "instances": batch},
            {"op": "admit", "service": service, "instances": batch},
        ]
    why = fresh_refusal(service, policy, serving, len(canary))
    base: list[str] = []
    extra = [i.id for i in fresh]  # a fresh baseline that cannot serve this canary retires
    if not why:
        release = serving[0].release
        base = [i.id for i in fresh if i.release == release and i.serving][: len(canary)]
        extra = [i.id for i in fresh if i.id not in base]
        maker = fresh_id(release)
        started = [maker() for _ in range(len(canary) - len(base))]
        if started:
            steps.append({"op": "baseline", "service": service, "instances": started, "release": release})
        base += started
    if extra:  # the canary is not in the pool before it is weighed (it would take an equal share)
        steps += _retire(service, extra, base + old, policy.routed)
    for look, weight in enumerate((w for w in policy.canary_weights if w < 100), start=1):
        step: Step = {"service": service, "instances": canary, "weight": weight}
        reason = why or (  # at 50% the serving instances would get nothing: the pool would shrink
            f"at {weight}% a fresh baseline would need {weight}% too, leaving the serving instances "
            f"{max(0, 100 - 2 * weight)}%"
            if 2 * weight >= 100
            else ""
        )
        if reason:
            step |= {"baseline": base + old, "serving": [], "against": "serving", "why": reason}
        else:
            step |= {"baseline": list(base), "serving": list(old), "against": "fresh", "why": ""}
        steps += [{"op": "weigh", **step}, {"op": "judge", **step, "look": look}]
    return steps + _rolling(service, canary, base + old, policy, new_id)


def fresh_refusal(service: str, policy: Policy, serving: Sequence[Running], size: int) -> str:
    """Why a canary of ``size`` instances cannot have a fresh baseline ("" if it can), in words
    without brackets (the CLI prints them as they are)."""
    if policy.baseline != "fresh":
        return f'service.{service}.canary.baseline = "{policy.baseline}"'
    releases = sorted({i.release for i in serving})
    if len(releases) != 1:
        listed = ", ".join(str(r) for r in releases)
        return f"the serving instances are of {len(releases)} releases ({listed}), not one"
    if not any(2 * w < 100 for w in policy.canary_weights if w < 100):
        return "every canary weight short of 100 is 50% or more, so a fresh baseline cannot match it"
    total = len(serving) + 2 * size
    if policy.max_instances is not None and total > policy.max_instances:
        return (
            f"a fresh baseline would run {total} instances at once, more than "
            f"service.{service}.scale.max = {policy.max_instances}"
        )
    return ""


def share_weights(groups: Sequence[tuple[int, int]]) -> list[int]:
    """Per-instance integer weights for groups of (instances, percent of requests): each group's
    instances together get exactly its percent (the router's weighted round robin is exact). A
    group with no instance or 0% gets weight 0 (it is left out of the pool)."""
    live = [(n, p) for n, p in groups if n and p]
    if not live:
        return [0] * len(groups)
    common = math.lcm(*(n for n, _ in live))
    raw = [p * common // n if n and p else 0 for n, p in groups]  # exact: n divides common
    divisor = math.gcd(*(w for w in raw if w))
    return [w // divisor for w in raw]


def canary_weights(canary: int, baseline: int, weight: int) -> tuple[int, int]:
    """Per-instance weights that give ``canary`` instances together exactly ``weight``% of the
    requests and ``baseline`` instances the rest (the router's weighted round robin is exact)."""
    if baseline == 0:
        return 1, 1
    divisor = math.gcd(weight * baseline, (100 - weight) * canary)
    return weight * baseline // divisor, (100 - weight) * canary // divisor


def _rolling(
    service: str, new: list[str], old: list[str], policy: Policy, new_id: Callable[[], str]
) -> list[Step]:
    steps: list[Step] = []
    n, surge, unavailable = policy.replicas, policy.max_surge, policy.max_unavailable
    new, old = list(new), list(old)
    while len(new) < n or old:
        if len(new) >= n:
            removable = len(old)
        else:
            removable = min(len(old), max(0, len(old) + len(new) - max(n - unavailable, 0)))
        if removable:
            retiring, old = old[:removable], old[removable:]
            steps += _retire(service, retiring, new + old, policy.routed)
            continue
        room = min(n - len(new), n + surge - (len(old) + len(new)))
        if room <= 0:  # surge and unavailable both 0: rules.py refuses such a policy
            raise ValueError("max_surge and max_unavailable cannot both be 0")
        batch = [new_id() for _ in range(room)]
        new += batch
        if not old and len(batch) >= BURST:
            steps.append(_grow(service, batch, new, policy.routed))
        else:
            steps += _admit(service, batch, new + old, policy.routed)
    return steps


def _blue_green(
    service: str, new: list[str], old: list[str], policy: Policy, new_id: Callable[[], str]
) -> list[Step]:
    batch = [new_id() for _ in range(max(0, policy.replicas - len(new)))]
    steps: list[Step] = []
    if batch:
        steps += [
            {"op": "start", "service": service, "instances": batch},
            {"op": "admit", "service": service, "instances": batch},
        ]
    green = new + batch
    if policy.routed and (batch or old):
        steps.append({"op": "pool", "service": service, "instances": green})
    if old:
        steps.append({"op": "retire", "service": service, "instances": old})
    return steps


def _admit(service: str, batch: list[str], pool: list[str], routed: bool) -> list[Step]:
    steps: list[Step] = [
        {"op": "start", "service": service, "instances": batch},
        {"op": "admit", "service": service, "instances": batch},
    ]
    if routed:
        steps.append({"op": "pool", "service": service, "instances": list(pool)})
    return steps


def _grow(service: str, batch: list[str], pool: list[str], routed: bool) -> Step:
    step: Step = {"op": "grow", "service": service, "instances": batch}
    if routed:
        step["pool"] = list(pool)
    return step


def _retire(service: str, retiring: list[str], pool: list[str], routed: bool) -> list[Step]:
    steps: list[Step] = []
    if routed:
        steps.append({"op": "pool", "service": service, "instances": list(pool)})
    steps.append({"op": "retire", "service": service, "instances": list(retiring)})
    return steps


def simulate(current: Sequence[Running], steps: Sequence[Step]) -> list[tuple[int, int, set[str]]]:
    """Replay steps on a model: after each step (running count, serving count, pool). For tests and
    for `herd deploy --dry-run`."""
    running = {i.id for i in current}
    healthy = {i.id for i in current if i.serving}
    pool = set(healthy)
    trace = []
    for step in steps:
        ids = set(step["instances"])
        if step["op"] == "start":
            running |= ids
        elif step["op"] == "admit":
            healthy |= ids
        elif step["op"] == "baseline":
            running |= ids
            healthy |= ids
        elif step["op"] == "grow":
            running |= ids
            healthy |= ids
            if "pool" in step:
                pool = set(step["pool"])
        elif step["op"] == "pool":
            pool = ids
        elif step["op"] == "weigh":
            pool = (
                ids
                | set(step["baseline"])
                | (set(step.get("serving", ())) if step["weight"] * 2 < 100 else set())
            )
        elif step["op"] == "retire":
            running -= ids
            healthy -= ids
            pool -= ids
        trace.append((len(running), len(pool & healthy), set(pool)))
    return trace
