"""The dashboard's live numbers, from the router totals the agent samples: request rates per
service, and per service and release the request rate, the error rate and p50/p99 latency.

The agent already adds each router sample's increase to monotonic totals per (service, release)
(`metrics.RouterTotals`, latency histograms included); a rate is the difference of two readings of
those totals over the time between them, and a quantile is read from the difference of two
histograms (as a canary's verdict reads its windows, `deploy.verdict.Window`). One history is kept
for every viewer: a reading is taken at most once a second, whoever asks, so many open pages cost
no more than one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from herdsman.agent.metrics import Key, RouterTotals
from herdsman.deploy.verdict import Window

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


def sparkline(
    values: Sequence[float | None], width: int = 120, height: int = 24, top: float | None = None
) -> str:
    """The ``points`` of an SVG polyline drawing ``values`` left to right, scaled to ``top`` (the
    highest value by default); a None (no request, so no latency) is left out."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    top = max(top if top is not None else max(known), 1e-9)
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}"
        for i, v in enumerate(values)
        if v is not None
    )


@dataclass(frozen=True)
class Point:
    """One second of one release of one service, at the router."""

    rate: float  # requests per second
    error_rate: float  # of those requests, the share that failed (5xx or no answer), 0..1
    p50_ms: float | None  # None: no request, or a router that keeps no histogram
    p99_ms: float | None


def windows(totals: RouterTotals) -> dict[Key, Window]:
    """The cumulative totals of each (service, release) as one window each."""
    bounds = totals.bounds_ms
    empty = (0,) * (len(bounds) + 1)
    return {
        key: Window(
            count,
            totals.errors.get(key, 0) + totals.answers_5xx.get(key, 0),
            tuple(totals.histograms.get(key, empty)),
            bounds,
        )
        for key, count in totals.requests.items()
    }


@dataclass
class SeriesHistory:
    """The last ``KEEP`` points of each (service, release) that had a request in that time: a
    release's chart appears with its first request and goes after a minute without one."""

    points: dict[Key, deque[Point]] = field(default_factory=dict)
    _last: tuple[float, dict[Key, Window]] | None = None

    def observe(self, now: float, totals: Mapping[Key, Window]) -> bool:
        """Take a reading at ``now`` (monotonic seconds); False when the last one is too recent."""
        if self._last is not None and now - self._last[0] < EVERY:
            return False
        if self._last is not None:
            then, before = self._last
            for key, window in totals.items():
                earlier = before.get(key)
                done = (
                    window
                    if earlier is None or earlier.bounds_ms != window.bounds_ms
                    else window.minus(earlier)
                )
                if done.requests < 0:  # totals only grow; never a negative rate
                    done = Window(0, 0, (0,) * len(window.latency), window.bounds_ms)
                if done.requests == 0 and key not in self.points:
                    continue  # a release gets a chart with its first request
                has_latency = bool(window.bounds_ms) and done.requests > 0
                self.points.setdefault(key, deque(maxlen=KEEP)).append(
                    Point(
                        done.requests / (now - then),
                        min(1.0, max(0.0, done.error_rate)),
                        done.quantile(0.5) if has_latency else None,
                        done.quantile(0.99) if has_latency else None,
                    )
                )
                kept = self.points[key]
                if len(kept) == KEEP and not any(p.rate for p in kept):  # a minute without a request
                    del self.points[key]  # (a retired release): its chart goes
        self._last = (now, dict(totals))
        return True

    def charts(self) -> list[dict[str, object]]:
        """Per (service, release), newest release first: the latest numbers and a polyline each."""
        out: list[dict[str, object]] = []
        for (service, release), points in sorted(
            self.points.items(), key=lambda item: (item[0][0], -_number(item[0][1]))
        ):
            series = list(points)
            last = series[-1]
            slowest = max((p.p99_ms for p in series if p.p99_ms is not None), default=None)
            out.append(
                {
                    "service": service,
                    "release": release,
                    "rate": round(last.rate, 1),
                    "errors": round(100 * last.error_rate, 2),
                    "p50": last.p50_ms,
                    "p99": last.p99_ms,
                    "top": {
                        "rate": round(max(p.rate for p in series), 1),
                        "errors": round(100 * max(p.error_rate for p in series), 2),
                        "latency": slowest,
                    },
                    "lines": {
                        "rate": sparkline([p.rate for p in series]),
                        "errors": sparkline([p.error_rate for p in series]),
                        "p50": sparkline([p.p50_ms for p in series], top=slowest),
                        "p99": sparkline([p.p99_ms for p in series], top=slowest),
                    },
                }
            )
        return out


def _number(release: str) -> int:
    return int(release) if release.isdigit() else -1
