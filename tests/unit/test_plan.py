"""The pure rollout planner, property-tested: capacity bounds hold at every step, the end state is right."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.deploy.plan import BURST, Policy, Running, plan_service, simulate


def _new_id_factory():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"new-{next(counter)}"


@settings(max_examples=400, deadline=None)
@given(
    old_count=st.integers(0, 8),
    replicas=st.integers(0, 8),
    surge=st.integers(0, 4),
    unavailable=st.integers(0, 4),
    strategy=st.sampled_from(["rolling", "blue-green"]),
)
def test_bounds_hold_and_the_end_state_is_the_target(
    old_count: int, replicas: int, surge: int, unavailable: int, strategy: str
) -> None:
    if surge == 0 and unavailable == 0:
        surge = 1
    current = [Running(f"old-{i}", release=1) for i in range(old_count)]
    policy = Policy(replicas, strategy, surge, unavailable)
    steps = plan_service("web", current, 2, policy, _new_id_factory())
    trace = simulate(current, steps)
    floor = min(old_count, max(replicas - unavailable, 0))
    for running, serving, _pool in trace:
        if strategy == "rolling":
            assert running <= max(old_count, replicas + surge)
        assert serving >= floor or (old_count == 0)
    final_running, final_serving, final_pool = trace[-1] if trace else (old_count, old_count, set())
    assert final_running == replicas == final_serving
    if replicas:
        assert all(i.startswith("new-") for i in final_pool)


def test_rolling_three_replicas_goes_one_at_a_time() -> None:
    current = [Running(f"old-{i}", 1) for i in range(3)]
    steps = plan_service("web", current, 2, Policy(3), _new_id_factory())
    ops = [(s["op"], s["instances"]) for s in steps]
    assert ops[:4] == [
        ("start", ["new-1"]),
        ("admit", ["new-1"]),
        ("pool", ["new-1", "old-0", "old-1", "old-2"]),
        ("pool", ["new-1", "old-1", "old-2"]),
    ]
    assert ops[4] == ("retire", ["old-0"])
    assert sum(1 for op, _ in ops if op == "start") == 3


def test_blue_green_switches_the_pool_in_one_step() -> None:
    current = [Running(f"old-{i}", 1) for i in range(3)]
    steps = plan_service("web", current, 2, Policy(3, "blue-green"), _new_id_factory())
    assert [s["op"] for s in steps] == ["start", "admit", "pool", "retire"]
    assert steps[2]["instances"] == ["new-1", "new-2", "new-3"]
    assert steps[3]["instances"] == ["old-0", "old-1", "old-2"]


def test_resuming_keeps_the_instances_already_on_the_target_release() -> None:
    current = [
        Running("old-0", 1),
        Running("old-1", 1),
        Running("new-a", 2),
        Running("new-b", 2, serving=False),
    ]
    steps = plan_service("web", current, 2, Policy(3), _new_id_factory())
    started = [i for s in steps if s["op"] == "start" for i in s["instances"]]
    retired = [i for s in steps if s["op"] == "retire" for i in s["instances"]]
    assert len(started) == 2 and "new-a" not in retired
    assert sorted(retired) == ["new-b", "old-0", "old-1"]


def test_nothing_to_do_gives_no_steps() -> None:
    current = [Running("a", 2), Running("b", 2)]
    assert plan_service("web", current, 2, Policy(2), _new_id_factory()) == []


def test_unrouted_services_get_no_pool_steps() -> None:
    steps = plan_service("worker", [Running("a", 1)], 2, Policy(1, routed=False), _new_id_factory())
    assert "pool" not in [s["op"] for s in steps]


@settings(max_examples=300, deadline=None)
@given(
    old_count=st.integers(1, 8),
    replicas=st.integers(1, 8),
    surge=st.integers(0, 3),
    weights=st.lists(st.integers(1, 99), min_size=0, max_size=4).map(lambda w: (*sorted(set(w)), 100)),
)
def test_a_canary_is_judged_at_each_weight_then_rolls_and_never_lowers_capacity(
    old_count: int, replicas: int, surge: int, weights: tuple[int, ...]
) -> None:
    current = [Running(f"old-{i}", release=1) for i in range(old_count)]
    policy = Policy(replicas, "canary", max(surge, 1), 0, canary_weights=weights, baseline="serving")
    steps = plan_service("web", current, 2, policy, _new_id_factory())
    judged = [s["weight"] for s in steps if s["op"] == "judge"]
    assert judged == [w for w in weights if w < 100]  # every step short of 100 is judged, in order
    first_judge = next((i for i, s in enumerate(steps) if s["op"] == "judge"), 0)
    assert not any(s["op"] == "retire" for s in steps[:first_judge])  # no old one goes before a verdict
    for step in steps:
        if step["op"] in ("weigh", "judge"):
            assert step["baseline"] == [f"old-{i}" for i in range(old_count)]
            assert 1 <= len(step["instances"]) <= replicas
    trace = simulate(current, steps)
    for _running, serving, _pool in trace:
        assert serving >= min(old_count, replicas)
    final_running, final_serving, final_pool = trace[-1]
    assert final_running == replicas == final_serving and all(i.startswith("new-") for i in final_pool)


def test_a_canary_with_nothing_to_compare_with_is_a_plain_start() -> None:
    steps = plan_service("web", [], 1, Policy(2, "canary", 1, 0, canary_weights=(10, 100)), _new_id_factory())
    assert [s["op"] for s in steps if s["op"] in ("weigh", "judge")] == []
    assert sum(len(s["instances"]) for s in steps if s["op"] == "start") == 2


@given(kept=st.integers(0, 20), replicas=st.integers(0, 1200), routed=st.booleans())
def test_a_scale_out_of_ten_or_more_is_one_burst_that_ends_with_every_instance_pooled(
    kept: int, replicas: int, routed: bool
) -> None:
    current = [Running(f"k{n}", 2) for n in range(kept)]
    steps = plan_service("web", current, 2, Policy(replicas=replicas, routed=routed), _new_id_factory())
    grows = [s for s in steps if s["op"] == "grow"]
    if replicas - kept >= BURST:
        assert len(grows) == 1 and len(steps) == 1
        assert len(grows[0]["instances"]) == replicas - kept
        if routed:
            assert sorted(grows[0]["pool"]) == sorted([r.id for r in current] + grows[0]["instances"])
        else:
            assert "pool" not in grows[0]
    else:
        assert not grows
    trace = simulate(current, steps)
    if trace and routed:
        running, serving, pool = trace[-1]
        assert running == serving == len(pool) == max(replicas, 0)


def test_a_burst_is_never_a_rolling_replacement() -> None:
    """Old instances to replace keep the one-at-a-time rolling plan (surge bounds hold)."""
    current = [Running(f"old-{n}", 1) for n in range(3)]
    steps = plan_service("web", current, 2, Policy(replicas=30, max_surge=30), _new_id_factory())
    assert not any(s["op"] == "grow" for s in steps)
