"""`GET /metrics`: what the agent and the router know, in the Prometheus text format.

The router counts per backend, and a backend disappears from its stats when its instance is
replaced, so its counters would fall: a Prometheus counter must never do that. The agent therefore
samples the router (every half second, with autoscaling) and adds each backend's *increase* to
totals per service and release, which only ever grow. Instance counts, restarts, quarantines,
drift findings and deploy durations come from the agent's own bookkeeping and the state store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

Key = tuple[str, str]  # (service, release)


@dataclass
class RouterTotals:
    """Monotonic request, error and latency totals per (service, release), from router samples."""

    requests: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    answers_5xx: dict[Key, int] = field(default_factory=lambda: defaultdict(int))  # answered, with a 5xx
    # latency histograms (router/latency.py's buckets, as the router's stats give them), for the
    # dashboard's p50/p99; empty where the router keeps none (HAProxy)
    histograms: dict[Key, list[int]] = field(default_factory=dict)
    bounds_ms: tuple[float, ...] = ()
    _last: dict[str, _Backend] = field(default_factory=dict)  # per backend instance

    @property
    def backends(self) -> int:
        """How many backends the last sample had."""
        return len(self._last)

    def update(self, env: str, stats: Mapping[str, Any], release_of: Callable[[str], str]) -> None:
        seen: dict[str, _Backend] = {}
        for route, body in stats.items():
            if not route.startswith(f"{env}/"):
                continue
            service = route.split("/", 1)[1]
            bounds = tuple(float(b) for b in body.get("latency_bounds_ms") or ())
            if bounds and bounds != self.bounds_ms:
                self.bounds_ms, self.histograms = bounds, {}
            for backend in body.get("backends") or []:
                instance = str(backend.get("instance", ""))
                count = int(backend.get("requests", 0))
                hist: dict[int, int] = {
                    int(i): int(n) for i, n in (backend.get("latency_hist") or {}).items()
                }
                now = _Backend(
                    count,
                    int(backend.get("errors", 0)),
                    float(backend.get("mean_latency_ms", 0.0)) * count / 1000.0,
                    int(backend.get("responses_5xx", 0)),
                    hist,
                )
                before = self._last.get(instance, _Backend())
                if count < before.requests:  # the router restarted: its counters began again
                    before = _Backend()
                key = (service, release_of(instance))
                self.requests[key] += count - before.requests
                self.errors[key] += max(0, now.errors - before.errors)
                self.latency[key] += max(0.0, now.seconds - before.seconds)
                self.answers_5xx[key] += max(0, now.answers_5xx - before.answers_5xx)
                if bounds and hist:
                    total = self.histograms.setdefault(key, [0] * (len(bounds) + 1))
                    for index, n in hist.items():
                        if 0 <= index < len(total):
                            total[index] += max(0, n - before.hist.get(index, 0))
                seen[instance] = now
        self._last = seen


@dataclass(frozen=True)
class _Backend:
    """One backend's cumulative counters at the last sample."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    answers_5xx: int = 0
    hist: dict[int, int] = field(default_factory=dict)


@dataclass
class AgentCounts:
    """What the agent counts itself."""

    restarts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    quarantines: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    drift: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scalings: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows; built by the agent, rendered here."""

    env: str
    router: RouterTotals
    counts: AgentCounts
    instances: Mapping[tuple[str, str], int]  # (service, state) -> count
    wanted: Mapping[str, int]  # service -> replicas wanted
    deploys: list[tuple[int, float]]  # (release, seconds) of finished rollouts


class _Collector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        labels = ["env", "service", "release"]
        requests = CounterMetricFamily(
            "herd_requests", "Requests answered through the router.", labels=labels
        )
        errors = CounterMetricFamily(
            "herd_request_errors", "Requests that failed at the router.", labels=labels
        )
        latency = SummaryMetricFamily(
            "herd_request_duration_seconds", "Time from request to response, at the router.", labels=labels
        )
        for (service, release), count in sorted(s.router.requests.items()):
            values = [s.env, service, release]
            requests.add_metric(values, count)
            errors.add_metric(values, s.router.errors.get((service, release), 0))
            latency.add_metric(
                values, count_value=count, sum_value=s.router.latency.get((service, release), 0.0)
            )
        yield from (requests, errors, latency)

        instances = GaugeMetricFamily(
            "herd_instances", "Instances by state.", labels=["env", "service", "state"]
        )
        for (service, state), count in sorted(s.instances.items()):
            instances.add_metric([s.env, service, state], count)
        yield instances
        wanted = GaugeMetricFamily("herd_replicas_wanted", "Instances wanted.", labels=["env", "service"])
        for service, count in sorted(s.wanted.items()):
            wanted.add_metric([s.env, service], count)
        yield wanted

        for name, doc, table in (
            ("herd_restarts", "Exited instances the agent replaced.", s.counts.restarts),
            ("herd_quarantines", "Instances quarantined (unhealthy or drifted).", s.counts.quarantines),
            ("herd_drift_findings", "Instances found drifted from their image or release.", s.counts.drift),
            ("herd_scalings", "Replica count changes by the autoscaler.", s.counts.scalings),
        ):
            family = CounterMetricFamily(name, doc, labels=["env", "service"])
            for service, count in sorted(table.items()):
                family.add_metric([s.env, service], count)
            yield family

        deploys = SummaryMetricFamily(
            "herd_deploy_duration_seconds", "Duration of finished rollouts.", labels=["env"]
        )
        deploys.add_metric([s.env], count_value=len(s.deploys), sum_value=sum(sec for _, sec in s.deploys))
        yield deploys
        if s.deploys:
            last = GaugeMetricFamily(
                "herd_last_deploy_seconds",
                "Duration of the latest finished rollout.",
                labels=["env", "release"],
            )
            number, seconds = s.deploys[-1]
            last.add_metric([s.env, str(number)], seconds)
            yield last


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)
