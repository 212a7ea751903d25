"""Request rates per service for the dashboard's live view, from the router totals the agent samples.

The agent already adds each router sample's increase to monotonic totals per (service, release)
(`metrics.RouterTotals`); a rate is the difference of two readings of those totals over the time
between them. One history is kept for every viewer: a reading is taken at most once a second,
whoever asks, so many open pages cost no more than one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

KEEP = 60  # rates kept per service: a minute at one reading a second
EVERY = 1.0  # seconds between readings


def per_service(requests: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Totals per (service, release) summed per service."""
    totals: dict[str, int] = {}
    for (service, _release), count in requests.items():
        totals[service] = totals.get(service, 0) + count
    return totals


@dataclass
class RateHistory:
    """The last ``KEEP`` request rates (per second) of each service."""

    rates: dict[str, deque[float]] = field(default_factory=dict)
    _last: tuple[float, dict[str, int]] | None = None

    def observe(self, now: float, totals: Mapping[str, int]) -> bool:
        """Take a reading at ``now`` (monotonic seconds); False when the last one is too recent."""
        if self._last is not None and now - self._last[0] < EVERY:
            return False
        if self._last is not None:
            then, before = self._last
            for service, count in totals.items():
                done = max(0, count - before.get(service, 0))  # totals only grow; never a negative rate
                self.rates.setdefault(service, deque(maxlen=KEEP)).append(done / (now - then))
        self._last = (now, dict(totals))
        return True

    def latest(self, service: str) -> float:
        history = self.rates.get(service)
        return history[-1] if history else 0.0


def sparkline(values: list[float], width: int = 120, height: int = 24) -> str:
    """The ``points`` of an SVG polyline drawing ``values`` left to right, scaled to the highest."""
    if not values:
        return ""
    top = max(max(values), 1e-9)
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}" for i, v in enumerate(values)
    )
