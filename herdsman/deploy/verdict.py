"""The canary's verdict: the new release against the current one, over the same window of time.

Pure: two windows of router counters in (requests, errors, a latency histogram per side), a
verdict out — "pass", "fail" or "hold" — with its numbers and its reason, always.

What peers get wrong, and what this does instead (see issue 16):
- Fixed thresholds alone are fooled by low traffic (a +650% deviation passing on a few points).
  Both sides are compared, and below `min_requests` on either side the verdict is "hold": the
  canary never promotes silently and never fails on noise.
- A verdict is looked at after every step, so a test that is only valid once would fail good
  releases. Error rates use an always-valid sequential test (a mixture SPRT, Johari et al.
  2017): canary minus baseline error rate, minus the allowed increase, must be shown > 0 at
  level alpha however often it is looked at.
- Latency uses Mann-Whitney U on the binned samples (as Kayenta does), one-sided (is the canary
  slower?), at a level that shrinks with each look (alpha / 2^look, so all looks together spend
  at most alpha), *and* a minimum effect: its p50 or p99 over the baseline's above
  `max_latency_ratio` and at least `min_latency_increase` slower (2.7 ms against 1.7 ms is
  a ratio of 1.6 and noise). A significant but tiny slowdown passes; a large one on a handful of
  requests holds until there are enough.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["pass", "fail", "hold"]


@dataclass(frozen=True)
class Window:
    """What one side answered during a window: counts, and latencies binned by ``bounds_ms``
    (upper bounds; ``latency`` has one more bucket, for anything slower)."""

    requests: int
    errors: int  # 5xx answers and requests that got no answer
    latency: tuple[int, ...]
    bounds_ms: tuple[float, ...]

    def minus(self, earlier: Window) -> Window:
        """This cumulative reading less an earlier one: what happened in between. An earlier
        reading with no histograms (a router that began keeping them since) counts as empty ones."""
        before = earlier.latency
        if earlier.bounds_ms != self.bounds_ms or len(before) != len(self.latency):
            before = (0,) * len(self.latency)
        return Window(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            tuple(a - b for a, b in zip(self.latency, before, strict=True)),
            self.bounds_ms,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The upper bound (ms) of the bucket holding the ``q`` quantile; None with no sample."""
        total = sum(self.latency)
        if total == 0:
            return None
        rank, seen = q * total, 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= rank and count:
                return self.bound(index)
        return self.bound(len(self.latency) - 1)

    def bound(self, index: int) -> float:
        return self.bounds_ms[index] if index < len(self.bounds_ms) else self.bounds_ms[-1] * 1.12


def combine(windows: Sequence[Window], bounds_ms: Sequence[float]) -> Window:
    """Several backends' windows as one side."""
    size = len(bounds_ms) + 1
    return Window(
        sum(w.requests for w in windows),
        sum(w.errors for w in windows),
        tuple(sum(w.latency[i] for w in windows) for i in range(size)),
        tuple(bounds_ms),
    )


@dataclass(frozen=True)
class Rules:
    """`[service.NAME.canary]`."""

    max_error_increase: float = 0.01  # canary error rate may exceed the baseline's by this much
    max_latency_ratio: float = 1.5  # canary p50 or p99 over the baseline's
    min_latency_increase_ms: float = 2.0  # below this, a ratio is noise (1.5 ms against 1 ms)
    min_requests: int = 50  # on each side, before any verdict
    alpha: float = 0.05  # the chance of failing a release as good as the current one


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def judge(canary: Window, baseline: Window, rules: Rules, *, look: int = 1) -> Verdict:
    """The verdict on ``canary`` against ``baseline`` at the ``look``-th look (1, 2, ...)."""
    numbers: dict[str, float] = {
        "canary_requests": canary.requests,
        "baseline_requests": baseline.requests,
        "canary_error_rate": round(canary.error_rate, 5),
        "baseline_error_rate": round(baseline.error_rate, 5),
    }
    for name, side in (("canary", canary), ("baseline", baseline)):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            value = side.quantile(q)
            if value is not None:
                numbers[f"{name}_{label}_ms"] = value
    low = min(canary.requests, baseline.requests)
    if low < rules.min_requests:
        short = "canary" if canary.requests < rules.min_requests else "baseline"
        return Verdict(
            "hold",
            f"too little traffic: the {short} answered {low} request(s), "
            f"{rules.min_requests} are needed before a verdict",
            numbers,
        )
    evidence = error_evidence(canary, baseline, rules.max_error_increase)
    numbers["error_evidence"] = round(min(evidence, 1e12), 3)
    if evidence >= 1 / rules.alpha:
        return Verdict(
            "fail",
            f"error rate {canary.error_rate:.2%} against the baseline's {baseline.error_rate:.2%} "
            f"(more than {rules.max_error_increase:.2%} above it, evidence {evidence:.0f} >= "
            f"{1 / rules.alpha:.0f})",
            numbers,
        )
    p_value, _ = mann_whitney_slower(canary.latency, baseline.latency)
    numbers["latency_p_value"] = round(p_value, 6)
    level = rules.alpha / 2**look
    if p_value < level:
        for label in ("p50", "p99"):
            mine, theirs = numbers.get(f"canary_{label}_ms"), numbers.get(f"baseline_{label}_ms")
            if label == "p99" and canary.requests < 100:
                continue  # a p99 of fewer than 100 requests is its slowest one or two
            too_slow = mine is not None and theirs and mine / theirs > rules.max_latency_ratio
            if too_slow and mine is not None and theirs and mine - theirs >= rules.min_latency_increase_ms:
                numbers[f"{label}_ratio"] = round(mine / theirs, 3)
                return Verdict(
                    "fail",
                    f"{label} latency {mine:g} ms against the baseline's {theirs:g} ms "
                    f"({mine / theirs:.1f}x > {rules.max_latency_ratio:g}x; Mann-Whitney p={p_value:.2g} "
                    f"< {level:.2g})",
                    numbers,
                )
    if not sum(canary.latency) and not sum(baseline.latency):
        latency = "latency not judged: the router keeps no latency histograms (HAProxy)"
    else:
        mine, theirs = numbers.get("canary_p50_ms", 0), numbers.get("baseline_p50_ms", 0)
        latency = f"p50 {mine:g} ms (baseline {theirs:g} ms)"
    return Verdict(
        "pass",
        f"error rate {canary.error_rate:.2%} (baseline {baseline.error_rate:.2%}), {latency}",
        numbers,
    )


def error_evidence(canary: Window, baseline: Window, allowed: float) -> float:
    """The mixture likelihood ratio against "the canary's error rate is at most the baseline's
    plus ``allowed``": always valid, so it may be read after every step. Large means the canary
    errs more; 1/alpha is the bar."""
    nc, nb = canary.requests, baseline.requests
    if nc == 0 or nb == 0:
        return 0.0
    pc = (canary.errors + 0.5) / (nc + 1)  # smoothed: a side without error still has a variance
    pb = (baseline.errors + 0.5) / (nb + 1)
    excess = canary.errors / nc - baseline.errors / nb - allowed
    if excess <= 0:
        return 0.0
    variance = pc * (1 - pc) / nc + pb * (1 - pb) / nb
    tau2 = max(allowed, 0.01) ** 2 * 25  # the mixing prior: effects of a few times the allowance
    exponent = excess**2 * tau2 / (2 * variance * (variance + tau2))
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + exponent
    return math.exp(min(log_ratio, 700.0))  # past e^700 it is certain, and a float still


def mann_whitney_slower(canary: Sequence[int], baseline: Sequence[int]) -> tuple[float, float]:
    """One-sided Mann-Whitney U on two histograms over the same buckets: the p-value of "the
    canary is no slower", and the effect (the chance a canary request is slower than a baseline
    one, ties counted half). Normal approximation with the tie correction."""
    n1, n2 = sum(canary), sum(baseline)
    if n1 == 0 or n2 == 0:
        return 1.0, 0.5
    rank_sum, below, ties = 0.0, 0, 0.0
    for mine, theirs in zip(canary, baseline, strict=True):
        together = mine + theirs
        if together:
            mid = below + (together + 1) / 2  # the mid-rank of this bucket's values
            rank_sum += mine * mid
            ties += together**3 - together
            below += together
    u = rank_sum - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0, u / (n1 * n2)
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)  # with continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2)), u / (n1 * n2)
