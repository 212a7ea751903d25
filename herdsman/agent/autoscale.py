"""Autoscaling from the router's live counters: pure decisions, so their rules are unit-tested.

Every sample gives, per routed service, the requests in flight and the requests answered so far
(per backend, cumulative). The wanted count is the load divided by the per-instance target, kept
within [min, max]. Scale out at once (load is here now); scale in only when every wanted count of
the whole `scale_in_window` was lower than the current one (load that dips for a moment must not
make the pool flap), and then only to the highest of them. The agent never scales during a
rollout and never a service whose count was fixed with `herd scale`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from herdsman.spec.models import Scale

SMOOTHING = 2.0  # seconds of samples averaged for the in-flight metric


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    inflight: int  # requests in flight over the service's pool, now
    requests: dict[str, int]  # cumulative requests answered, per backend instance


@dataclass
class ServiceLoad:
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=64))
    wanted: deque[tuple[float, int]] = field(default_factory=deque)  # (at, wanted count) history
    since: float | None = None  # when the history began: a scale-in needs a whole window of it


def rate(older: Sample, newer: Sample) -> float:
    """Requests per second between two samples, counting only backends present in both (a backend
    that joined or left has no meaningful difference)."""
    seconds = newer.at - older.at
    if seconds <= 0:
        return 0.0
    done = sum(max(0, n - older.requests[b]) for b, n in newer.requests.items() if b in older.requests)
    return done / seconds


def wanted_count(rule: Scale, load: ServiceLoad) -> int | None:
    """What the load asks for, within [min, max]; None before there is enough to tell."""
    if not load.samples:
        return None
    newest = load.samples[-1]
    recent = [s for s in load.samples if newest.at - s.at <= SMOOTHING]
    needs: list[float] = []
    if rule.target_inflight is not None:
        needs.append(sum(s.inflight for s in recent) / len(recent) / rule.target_inflight)
    if rule.target_rps is not None:
        if len(recent) < 2:
            return None
        needs.append(rate(recent[0], newest) / rule.target_rps)
    if not needs:
        return None
    return max(rule.min, min(rule.max, math.ceil(max(needs) - 1e-9)))


def decide(rule: Scale, load: ServiceLoad, current: int, now: float) -> int | None:
    """The new count for a service running ``current`` instances, or None to leave it."""
    wanted = wanted_count(rule, load)
    if wanted is None:
        return None
    load.wanted.append((now, wanted))
    if load.since is None:
        load.since = now
    while load.wanted and now - load.wanted[0][0] > rule.scale_in_window:
        load.wanted.popleft()
    bounded = max(rule.min, min(rule.max, current))
    if bounded != current:
        return bounded  # outside the bounds (e.g. a release with more replicas than max)
    if wanted > current:
        return wanted
    window_full = now - load.since >= rule.scale_in_window
    highest = max(w for _, w in load.wanted)
    if window_full and highest < current:
        return highest
    return None


def sample_of(route_stats: dict[str, object], at: float) -> Sample:
    """A sample from the router's `stats` of one route."""
    backends = route_stats.get("backends") or []
    assert isinstance(backends, list)
    return Sample(
        at,
        sum(int(b.get("inflight", 0)) for b in backends),
        {str(b["instance"]): int(b.get("requests", 0)) for b in backends},
    )
