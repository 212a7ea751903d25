"""A canary's fresh baseline, planned purely: as many new instances of the serving release as the
canary has, at the canary's weight while twice it fits in 100%, the serving instances otherwise
(and the reason recorded); reused after a crash, never left behind, and exact shares of requests."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.deploy.plan import Policy, Running, fresh_refusal, plan_service, share_weights, simulate


def _ids(prefix: str):  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def _fresh_ids(release: int):  # type: ignore[no-untyped-def]
    return _ids(f"base{release}")


WEIGHTS = st.lists(st.integers(1, 99), min_size=1, max_size=4).map(lambda w: (*sorted(set(w)), 100))


@settings(max_examples=300, deadline=None)
@given(old_count=st.integers(1, 8), replicas=st.integers(1, 8), surge=st.integers(1, 3), weights=WEIGHTS)
def test_a_fresh_baseline_matches_the_canary_then_retires_with_the_old_instances(
    old_count: int, replicas: int, surge: int, weights: tuple[int, ...]
) -> None:
    current = [Running(f"old-{i}", release=1) for i in range(old_count)]
    policy = Policy(replicas, "canary", surge, 0, canary_weights=weights)
    steps = plan_service("web", current, 2, policy, _ids("new"), _fresh_ids)
    started = [s for s in steps if s["op"] == "baseline"]
    judged = [s for s in steps if s["op"] == "judge"]
    assert [s["weight"] for s in judged] == [w for w in weights if w < 100]
    if any(2 * w < 100 for w in weights if w < 100):
        assert len(started) == 1 and started[0]["release"] == 1
        fresh = started[0]["instances"]
        assert all(i.startswith("base1-") for i in fresh)
    else:
        assert started == [] and all("50% or more" in s["why"] for s in judged)
        fresh = []
    old = [f"old-{i}" for i in range(old_count)]
    for step in judged:
        assert len(fresh) in (0, len(step["instances"]))  # as many as the canary
        if 2 * step["weight"] < 100 and fresh:  # at 50% the serving instances would get nothing
            assert step["against"] == "fresh" and step["baseline"] == fresh and step["serving"] == old
        else:
            assert step["against"] == "serving" and step["why"]
            assert step["baseline"] == fresh + old and step["serving"] == []
    first_judge = next(i for i, s in enumerate(steps) if s["op"] == "judge")
    assert not any(s["op"] == "retire" for s in steps[:first_judge])
    retired = {i for s in steps if s["op"] == "retire" for i in s["instances"]}
    assert set(fresh) | set(old) == retired  # the fresh baseline retires with the old instances
    trace = simulate(current, steps)
    final_running, final_serving, final_pool = trace[-1]
    assert final_running == replicas == final_serving and all(i.startswith("new-") for i in final_pool)


def test_after_a_crash_the_fresh_baseline_is_reused_and_extras_retire() -> None:
    policy = Policy(4, "canary", 1, 0, canary_weights=(25, 50, 100))
    current = [Running(f"old-{i}", 1) for i in range(4)]
    current += [Running("new-a", 2), Running("base-a", 1, baseline=True), Running("base-b", 1, baseline=True)]
    steps = plan_service("web", current, 2, policy, _ids("new"), _fresh_ids)
    assert not any(s["op"] == "baseline" for s in steps)  # one canary, one fresh baseline: kept
    assert steps[0] == {
        "op": "pool",
        "service": "web",
        "instances": ["base-a", *(f"old-{i}" for i in range(4))],
    }
    assert steps[1] == {"op": "retire", "service": "web", "instances": ["base-b"]}
    judged = [s for s in steps if s["op"] == "judge"]
    olds = [f"old-{i}" for i in range(4)]
    assert [s["baseline"] for s in judged] == [["base-a"], ["base-a", *olds]], "at 50%: the serving"
    assert [s["against"] for s in judged] == ["fresh", "serving"]
    assert simulate(current, steps)[-1][0] == 4


def test_a_revert_retires_the_fresh_baseline_with_the_canary_at_once() -> None:
    """Back to release 1 (a failed canary): its fresh baseline is of release 1 but is not kept."""
    current = [Running(f"old-{i}", 1) for i in range(3)]
    current += [Running("new-a", 2), Running("base-a", 1, baseline=True)]
    steps = plan_service("web", current, 1, Policy(3), _ids("x"))
    assert steps == [
        {"op": "pool", "service": "web", "instances": ["old-0", "old-1", "old-2"]},
        {"op": "retire", "service": "web", "instances": ["base-a", "new-a"]},
    ]


def test_why_a_fresh_baseline_is_refused() -> None:
    serving = [Running("a", 1), Running("b", 1)]
    assert fresh_refusal("web", Policy(2, "canary", canary_weights=(10, 100)), serving, 1) == ""
    serving_only = Policy(2, "canary", baseline="serving")
    assert fresh_refusal("web", serving_only, serving, 1) == 'service.web.canary.baseline = "serving"'
    mixed = [Running("a", 1), Running("b", 3)]
    assert "2 releases" in fresh_refusal("web", Policy(2, "canary"), mixed, 1)
    assert "50% or more" in fresh_refusal("web", Policy(2, "canary", canary_weights=(60, 100)), serving, 1)
    limited = Policy(2, "canary", canary_weights=(10, 100), max_instances=3)
    assert "service.web.scale.max = 3" in fresh_refusal("web", limited, serving, 1)


@given(
    canary=st.integers(1, 40),
    base=st.integers(1, 40),
    serving=st.integers(0, 60),
    weight=st.integers(1, 99),
)
def test_shares_are_exact_per_request(canary: int, base: int, serving: int, weight: int) -> None:
    if 2 * weight < 100 and serving:  # against a fresh baseline: w, w and the rest
        groups = [(canary, weight), (base, weight), (serving, 100 - 2 * weight)]
    else:  # against the serving instances: w and the rest
        groups = [(canary, weight), (base, 100 - weight), (serving, 0)]
    weights = share_weights(groups)
    total = sum(n * w for (n, _), w in zip(groups, weights, strict=True))
    for (count, percent), weight in zip(groups, weights, strict=True):
        assert weight >= 0 and (weight == 0) == (count == 0 or percent == 0)
        assert Fraction(count * weight, total) == Fraction(percent, 100)


def test_a_canary_a_fresh_baseline_and_the_serving_rest() -> None:
    assert share_weights([(1, 10), (1, 10), (4, 80)]) == [1, 1, 2]  # 1 + 1 + 4*2 = 10: 10%, 10%, 80%
    assert share_weights([(2, 50), (2, 50), (5, 0)]) == [1, 1, 0]


def test_the_agent_heals_a_left_fresh_baseline_away_first() -> None:
    """Outside a rollout (a deploy killed without its agent), a fresh baseline the agent finds is
    the instance that goes when the service has one too many, whatever the listing order."""
    from herdsman.agent.fleet import Seen, Want, heal_plan

    seen = [
        Seen("base-a", "web", 1, True, baseline=True),
        Seen("old-0", "web", 1, True),
        Seen("old-1", "web", 1, True),
    ]
    steps = heal_plan("web", seen, Want(1, Policy(2)), _ids("x"))
    assert steps == [
        {"op": "pool", "service": "web", "instances": ["old-0", "old-1"]},
        {"op": "retire", "service": "web", "instances": ["base-a"]},
    ]


def test_the_baseline_is_fresh_unless_told_and_a_wrong_one_is_refused_with_its_key() -> None:
    from tests.unit.test_spec import error, mutate, parse

    canary = mutate("service.web.deploy.strategy", "canary")
    assert parse(canary).service["web"].canary.baseline == "fresh"
    canary["service"]["web"]["canary"] = {"baseline": "serving"}
    assert parse(canary).service["web"].canary.baseline == "serving"
    canary["service"]["web"]["canary"] = {"baseline": "warm"}
    err = error(canary)
    assert err.file == "herd.toml" and err.problems[0].key.endswith("service.web.canary.baseline")
    assert "'warm' is not a choice here" in err.problems[0].message
    assert err.problems[0].hint == "use 'fresh' or 'serving'"


def test_the_state_store_keeps_which_baseline_each_canary_row_used(tmp_path: Path) -> None:
    from herdsman.state import StateStore

    store = StateStore(tmp_path / "state.db")
    store.set_canary("production", "web", 2, 20, "judging", {"baseline_requests": 40}, "holding", "fresh")
    assert store.canaries("production")[0]["baseline"] == "fresh"
    why = "serving (at 60% a fresh baseline would need 120% too)"
    store.set_canary("production", "web", 2, 60, "passed", {}, "error rate 0.00%", why)
    row = store.canaries("production")[0]
    assert row["baseline"] == why and row["weight"] == 60 and row["state"] == "passed"
