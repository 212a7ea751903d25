"""Autoscaling decisions: out at once, in only after a whole calm window, always within bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herdsman.agent.autoscale import Sample, ServiceLoad, decide, rate, sample_of, wanted_count
from herdsman.spec.models import Scale


def feed(load: ServiceLoad, at: float, inflight: int, requests: dict[str, int] | None = None) -> None:
    load.samples.append(Sample(at, inflight, requests or {}))


def test_scales_out_at_once_and_in_only_after_the_window() -> None:
    rule = Scale(min=1, max=5, target_inflight=2, scale_in_window="10s")
    load = ServiceLoad()
    feed(load, 0.0, 1)
    assert decide(rule, load, 1, 0.0) is None
    feed(load, 3.0, 8)  # 8 in flight, 2 per instance: 4 wanted
    assert decide(rule, load, 1, 3.0) == 4
    for t in range(4, 13):  # calm again, but the window still remembers the burst
        feed(load, float(t), 0)
        assert decide(rule, load, 4, float(t)) is None
    current, changes = 4, []
    for t in range(13, 40):
        feed(load, float(t), 0)
        new = decide(rule, load, current, float(t))
        if new is not None:
            changes.append((t, new))
            current = new
    # the burst (4 wanted at 3) leaves the 10 s window at 14; its smoothed tail (2 wanted at 4 and 5)
    # at 16: in steps, never below what the last window asked for
    assert changes == [(14, 2), (16, 1)]


def test_never_outside_min_and_max() -> None:
    rule = Scale(min=2, max=3, target_inflight=1, scale_in_window="1s")
    load = ServiceLoad()
    feed(load, 0.0, 100)
    assert decide(rule, load, 2, 0.0) == 3
    load = ServiceLoad()
    feed(load, 0.0, 0)
    assert wanted_count(rule, load) == 2
    assert decide(rule, load, 7, 0.0) == 3, "a count above max is brought back within bounds"


def test_requests_per_second_counts_backends_present_in_both_samples() -> None:
    older = Sample(0.0, 0, {"a": 100, "b": 50})
    newer = Sample(2.0, 0, {"a": 300, "c": 999})  # b left, c joined: neither counts
    assert rate(older, newer) == 100.0
    rule = Scale(min=1, max=10, target_rps=30, scale_in_window="60s")
    load = ServiceLoad()
    load.samples.extend([older, newer])
    assert wanted_count(rule, load) == 4  # 100 rps / 30 per instance


def test_sample_from_router_stats() -> None:
    stats = {
        "backends": [{"instance": "w1", "inflight": 2, "requests": 10}, {"instance": "w2", "inflight": 1}]
    }
    sample = sample_of(stats, 5.0)
    assert sample.inflight == 3 and sample.requests == {"w1": 10, "w2": 0}


@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=40),
    st.integers(0, 4),
    st.integers(1, 8),
    st.integers(1, 10),
)
def test_any_load_keeps_the_count_within_bounds(loads: list[int], low: int, span: int, start: int) -> None:
    rule = Scale(min=low, max=low + span, target_inflight=3, scale_in_window="5s")
    load = ServiceLoad()
    current = start
    for t, inflight in enumerate(loads):
        feed(load, float(t), inflight)
        new = decide(rule, load, current, float(t))
        if new is not None:
            assert new != current
            current = new
        assert rule.min <= current <= rule.max
