"""The canary verdict (deploy/verdict.py): its statistics checked against brute force, its
properties with hypothesis, and its false-fail rate with seeded A/A simulations."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.deploy.verdict import Rules, Window, combine, error_evidence, judge, mann_whitney_slower
from herdsman.router.latency import LATENCY_BOUNDS_MS, bucket, empty

RULES = Rules(max_error_increase=0.01, max_latency_ratio=1.5, min_requests=50, alpha=0.05)


def window(latencies_s: list[float], errors: int = 0) -> Window:
    hist = empty()
    for seconds in latencies_s:
        hist[bucket(seconds)] += 1
    return Window(len(latencies_s), errors, tuple(hist), LATENCY_BOUNDS_MS)


def simulate(rng: random.Random, n: int, *, median_s: float, error_rate: float) -> Window:
    latencies = [rng.lognormvariate(math.log(median_s), 0.4) for _ in range(n)]
    return window(latencies, errors=sum(rng.random() < error_rate for _ in range(n)))


def test_mann_whitney_u_matches_counting_pairs() -> None:
    rng = random.Random(7)
    for _ in range(30):
        a = [rng.randrange(8) for _ in range(rng.randrange(1, 25))]
        b = [rng.randrange(8) for _ in range(rng.randrange(1, 25))]
        ha, hb = [0] * 8, [0] * 8
        for x in a:
            ha[x] += 1
        for x in b:
            hb[x] += 1
        pairs = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
        _, effect = mann_whitney_slower(ha, hb)
        assert math.isclose(effect, pairs / (len(a) * len(b)))


def test_a_three_times_slower_canary_fails_on_latency_and_says_by_how_much() -> None:
    rng = random.Random(1)
    verdict = judge(
        simulate(rng, 200, median_s=0.030, error_rate=0),
        simulate(rng, 800, median_s=0.010, error_rate=0),
        RULES,
    )
    assert verdict.outcome == "fail"
    assert "p50 latency" in verdict.reason and "Mann-Whitney" in verdict.reason
    assert 2.4 < verdict.numbers["p50_ratio"] < 3.6


def test_a_slightly_slower_canary_passes_however_significant() -> None:
    rng = random.Random(2)
    canary = simulate(rng, 3000, median_s=0.011, error_rate=0)
    baseline = simulate(rng, 3000, median_s=0.010, error_rate=0)
    p_value, _ = mann_whitney_slower(canary.latency, baseline.latency)
    assert p_value < 0.001  # a real difference...
    assert judge(canary, baseline, RULES).outcome == "pass"  # ...below the effect that matters


def test_a_canary_failing_one_request_in_ten_fails_on_errors() -> None:
    rng = random.Random(3)
    verdict = judge(
        simulate(rng, 300, median_s=0.01, error_rate=0.10),
        simulate(rng, 3000, median_s=0.01, error_rate=0.0),
        RULES,
    )
    assert verdict.outcome == "fail" and "error rate" in verdict.reason
    assert verdict.numbers["error_evidence"] >= 20


def test_too_little_traffic_holds_and_says_how_much_is_needed() -> None:
    rng = random.Random(4)
    verdict = judge(
        simulate(rng, 10, median_s=0.5, error_rate=0.9),
        simulate(rng, 500, median_s=0.01, error_rate=0),
        RULES,
    )
    assert verdict.outcome == "hold"
    assert "the canary answered 10 request(s), 50 are needed" in verdict.reason


def test_windows_are_differences_of_cumulative_readings() -> None:
    earlier = window([0.01] * 10, errors=1)
    later = window([0.01] * 10 + [0.5] * 5, errors=3)
    between = later.minus(earlier)
    assert between.requests == 5 and between.errors == 2
    assert between.quantile(0.5) == LATENCY_BOUNDS_MS[bucket(0.5)]
    both = combine([earlier, between], LATENCY_BOUNDS_MS)
    assert both == later


def a_and_a_false_fails(baseline: str, seed: int = 20261202, runs: int = 300) -> int:
    """How many of ``runs`` seeded A/A canaries (the same release on both sides, looked at after
    each of four steps, cumulative windows, the canary at 5, 25, 50% of 400 requests per step)
    fail. Against the "serving" baseline it has the rest of the requests; against a "fresh" one
    the same share as the canary (the serving instances' requests are not judged)."""
    rng = random.Random(seed)
    failed = 0
    for _ in range(runs):
        canary: list[float] = []
        base: list[float] = []
        c_err = b_err = 0
        for look, share in enumerate((0.05, 0.25, 0.5, 0.5), start=1):
            for _ in range(400):
                latency = rng.lognormvariate(math.log(0.01), 0.4)
                bad = rng.random() < 0.02
                draw = rng.random()
                if draw < share:
                    canary.append(latency)
                    c_err += bad
                elif baseline == "serving" or draw < 2 * share:
                    base.append(latency)
                    b_err += bad
            verdict = judge(window(canary, c_err), window(base, b_err), RULES, look=look)
            if verdict.outcome == "fail":
                failed += 1
                break
    return failed


@pytest.mark.parametrize("baseline", ["fresh", "serving"])
def test_a_and_a_false_fail_rate_is_below_alpha_over_four_looks(baseline: str) -> None:
    runs = 300
    failed = a_and_a_false_fails(baseline, runs=runs)
    assert failed / runs <= RULES.alpha, (
        f"{failed} of {runs} A/A canaries failed against a {baseline} baseline"
    )


counts = st.lists(st.integers(min_value=0, max_value=40), min_size=len(LATENCY_BOUNDS_MS) + 1).map(
    lambda xs: tuple(xs[: len(LATENCY_BOUNDS_MS) + 1])
)


@settings(max_examples=200, deadline=None)
@given(counts, st.data())
def test_a_canary_identical_to_its_baseline_never_fails(hist: tuple[int, ...], data: st.DataObject) -> None:
    requests = sum(hist)
    errors = data.draw(st.integers(min_value=0, max_value=requests))
    same = Window(requests, errors, hist, LATENCY_BOUNDS_MS)
    assert judge(same, same, RULES).outcome != "fail"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=49),
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0, max_value=1),
)
def test_below_the_minimum_it_neither_passes_nor_fails(small: int, large: int, rate: float) -> None:
    hist = empty()
    hist[10] = small
    canary = Window(small, int(small * rate), tuple(hist), LATENCY_BOUNDS_MS)
    other = empty()
    other[10] = large
    baseline = Window(large, 0, tuple(other), LATENCY_BOUNDS_MS)
    assert judge(canary, baseline, RULES).outcome == "hold"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=5000),
)
def test_more_canary_errors_never_weaken_the_evidence(nc: int, nb: int, ec: int, eb: int) -> None:
    ec, eb = min(ec, nc - 1), min(eb, nb)
    flat = tuple(empty())
    less = error_evidence(
        Window(nc, ec, flat, LATENCY_BOUNDS_MS), Window(nb, eb, flat, LATENCY_BOUNDS_MS), 0.01
    )
    more = error_evidence(
        Window(nc, ec + 1, flat, LATENCY_BOUNDS_MS), Window(nb, eb, flat, LATENCY_BOUNDS_MS), 0.01
    )
    assert more >= less


def test_behind_a_router_without_histograms_the_verdict_says_latency_was_not_judged() -> None:
    """HAProxy gives counts but no latency histograms: errors are judged, latency is said not to be."""
    nothing = tuple(empty())
    canary = Window(400, 1, nothing, LATENCY_BOUNDS_MS)
    baseline = Window(400, 1, nothing, LATENCY_BOUNDS_MS)
    verdict = judge(canary, baseline, RULES)
    assert verdict.outcome == "pass" and "latency not judged" in verdict.reason
    failing = judge(Window(400, 80, nothing, LATENCY_BOUNDS_MS), baseline, RULES)
    assert failing.outcome == "fail" and "error rate" in failing.reason
    timed = judge(simulate(random.Random(3), 400, median_s=0.01, error_rate=0), baseline, RULES)
    assert "not judged" not in timed.reason


def test_a_reading_from_before_the_histograms_began_counts_as_empty_ones() -> None:
    """A reading with no histograms (bounds changed, or none yet) never crashes a window: it counts
    as empty ones."""
    later = window([0.01, 0.02, 0.02])
    earlier = Window(1, 0, (), ())
    between = later.minus(earlier)
    assert between.requests == 2 and between.latency == later.latency
