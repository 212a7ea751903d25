"""Outlier ejection bookkeeping (router/outlier.py): when a backend leaves rotation, for how long,
and that it always comes back; and a pool (router/proxy.Route) never emptied by it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herdsman.router.outlier import BASE_COOLOFF, FAILURES_TO_EJECT, MAX_COOLOFF, Outlier
from herdsman.router.proxy import Backend, Route


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    outlier = Outlier()
    for _ in range(FAILURES_TO_EJECT - 1):
        assert not outlier.failed(0.0, may_eject=True)
    outlier.succeeded()
    for _ in range(FAILURES_TO_EJECT - 1):
        assert not outlier.failed(1.0, may_eject=True)
    assert outlier.failed(1.0, may_eject=True)
    assert outlier.ejected and outlier.ejections == 1
    assert outlier.remaining(1.0) == BASE_COOLOFF


def test_the_last_backend_is_never_ejected() -> None:
    outlier = Outlier()
    for _ in range(10 * FAILURES_TO_EJECT):
        assert not outlier.failed(0.0, may_eject=False)
    assert not outlier.ejected
    assert outlier.failed(0.0, may_eject=True), "a failure once another backend is back ejects it"


def test_probation_doubles_the_cooloff_up_to_the_cap_and_a_long_calm_resets_it() -> None:
    outlier = Outlier()
    now = 0.0
    for _ in range(FAILURES_TO_EJECT):
        outlier.failed(now, may_eject=True)
    cooloffs = []
    for _ in range(8):
        cooloffs.append(outlier.remaining(now))
        now += outlier.remaining(now)
        assert outlier.comes_back(now) and outlier.probation
        assert outlier.failed(now, may_eject=True), "on probation one failure is enough"
    assert cooloffs[:4] == [BASE_COOLOFF * 2**i for i in range(4)]
    assert max(cooloffs) == MAX_COOLOFF
    now += outlier.remaining(now)
    outlier.comes_back(now)
    outlier.succeeded()
    assert not outlier.probation
    now += MAX_COOLOFF
    for _ in range(FAILURES_TO_EJECT):
        outlier.failed(now, may_eject=True)
    assert outlier.remaining(now) == BASE_COOLOFF


events = st.lists(
    st.tuples(
        st.sampled_from(["fail", "ok", "tick"]),
        st.floats(min_value=0, max_value=30, allow_nan=False),
        st.booleans(),
    ),
    max_size=200,
)


@given(events)
def test_invariants_over_any_history(history: list[tuple[str, float, bool]]) -> None:
    outlier = Outlier()
    now = 0.0
    ejections = 0
    for kind, step, may_eject in history:
        now += step
        was_ejected = outlier.ejected
        if kind == "fail":
            ejected = outlier.failed(now, may_eject)
            assert not (ejected and not may_eject), "never ejected when the caller forbids it"
            assert not (ejected and was_ejected)
            if may_eject and not was_ejected:
                assert ejected == (outlier.failures == 0), "ejected exactly when the count was reached"
                assert outlier.failures < FAILURES_TO_EJECT
            ejections += ejected
        elif kind == "ok":
            outlier.succeeded()
            assert outlier.failures == 0 and not outlier.probation
        else:
            outlier.comes_back(now)
        assert 0 <= outlier.remaining(now) <= MAX_COOLOFF
        assert outlier.ejections == ejections
    now += MAX_COOLOFF
    outlier.comes_back(now)
    assert not outlier.ejected, "every ejection ends within MAX_COOLOFF"


pools = st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=6)
steps = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["fail", "ok", "choose", "tick"])), max_size=120
)


@given(pools, steps)
def test_a_pool_never_empties_by_ejection(
    pool: list[tuple[int, bool]], history: list[tuple[int, str]]
) -> None:
    route = Route("p/web", "127.0.0.1:1")
    route.backends = [
        Backend(f"i{n}", "127.0.0.1", 1000 + n, weight=weight, draining=draining)
        for n, (weight, draining) in enumerate(pool)
    ]
    serving = [b for b in route.backends if not b.draining]
    now = 0.0
    for index, kind in history:
        backend = route.backends[index % len(route.backends)]
        now += 0.5
        if kind == "fail":
            route.failed(backend, now)
        elif kind == "ok":
            backend.outlier.succeeded()
        elif kind == "tick":
            route.comeback(now)
        else:
            chosen = route.choose(frozenset())
            assert (chosen is None) == (not serving), "a pool with a backend not draining always answers"
            assert chosen is None or not chosen.draining
        in_rotation = [b for b in serving if not b.ejected]
        assert in_rotation or not serving, "the last backend in rotation is never ejected"
        assert route.ejected == sum(b.ejected for b in route.backends)
        assert all(not b.ejected for b in route.backends if b.draining)
        if len(in_rotation) < len(serving):
            assert route.choose(frozenset()) in in_rotation, "ejected backends get no request"
