"""The embedded router's rotation (router/proxy.py): a choice is one index into a turn built when
the pool changes, so a pool of a thousand backends costs a request no more than a pool of two;
weights are exact over every turn, equal weights are plain round robin in pool order, and a
change (a new pool, a drain, an ejection) takes effect at the next choice."""

from __future__ import annotations

import collections
import math

from hypothesis import given
from hypothesis import strategies as st

from herdsman.router.proxy import Backend, Route, rotation_of


def pool(weights: list[int]) -> list[Backend]:
    return [Backend(f"i{n}", "127.0.0.1", 2000 + n, weight=w) for n, w in enumerate(weights)]


def test_equal_weights_are_round_robin_in_pool_order() -> None:
    route = Route("p/web", "127.0.0.1:1", backends=pool([1] * 1000))
    chosen = [route.choose(frozenset()) for _ in range(2000)]
    assert [b.instance for b in chosen[:3]] == ["i0", "i1", "i2"]  # type: ignore[union-attr]
    assert collections.Counter(b.instance for b in chosen) == {f"i{n}": 2 for n in range(1000)}  # type: ignore[union-attr]


def test_a_choice_does_not_walk_the_pool() -> None:
    """A backend that would be visited by a walk over the pool is never looked at: the choice
    reads one entry of the rotation (a property counting reads of `draining` shows it)."""
    reads = collections.Counter[str]()

    class Counted(Backend):
        def __getattribute__(self, name: str) -> object:
            if name == "draining":
                reads[object.__getattribute__(self, "instance")] += 1
            return object.__getattribute__(self, name)

    route = Route(
        "p/web", "127.0.0.1:1", backends=[Counted(f"i{n}", "127.0.0.1", 3000 + n) for n in range(1000)]
    )
    route.choose(frozenset())  # builds the rotation: one pass over the pool
    reads.clear()
    for _ in range(500):
        route.choose(frozenset())
    assert sum(reads.values()) == 0


@given(st.lists(st.integers(1, 20), min_size=2, max_size=40))
def test_weights_are_exact_over_each_turn(weights: list[int]) -> None:
    backends = pool(weights)
    turn = rotation_of(backends, ejections=False)
    counts = collections.Counter(b.instance for b in turn)

    divisor = math.gcd(*weights)
    assert counts == {f"i{n}": w // divisor for n, w in enumerate(weights)}
    route = Route("p/web", "127.0.0.1:1", backends=backends)
    chosen = collections.Counter(route.choose(frozenset()).instance for _ in range(3 * len(turn)))  # type: ignore[union-attr]
    assert chosen == {k: 3 * v for k, v in counts.items()}


def test_changes_take_effect_at_the_next_choice() -> None:
    backends = pool([1, 1, 1])
    route = Route("p/web", "127.0.0.1:1", backends=backends)
    route.choose(frozenset())
    backends[1].draining = True
    route.changed()
    assert {route.choose(frozenset()).instance for _ in range(10)} == {"i0", "i2"}  # type: ignore[union-attr]
    route.backends = [*pool([1]), Backend("new", "127.0.0.1", 4000)]
    assert {route.choose(frozenset()).instance for _ in range(10)} == {"i0", "new"}  # type: ignore[union-attr]


def test_a_retry_takes_the_next_backend_not_tried() -> None:
    route = Route("p/web", "127.0.0.1:1", backends=pool([1, 1, 1]))
    tried = {"127.0.0.1:2000", "127.0.0.1:2001"}
    assert all(route.choose(tried).instance == "i2" for _ in range(5))  # type: ignore[union-attr]
    assert route.choose({"127.0.0.1:2000", "127.0.0.1:2001", "127.0.0.1:2002"}) is None


def test_a_retry_takes_no_turn_of_the_rotation() -> None:
    """Retries are extra choices: the first choices keep their exact shares, and a backend that
    does not answer is not tried by every request after one of its failures was retried (with
    [silent, alive], the rotation stays silent, alive, silent, alive: one failure in two, not in
    every request, so outlier ejection counts the failures a client would really have met)."""
    route = Route("p/web", "127.0.0.1:1", backends=pool([1, 1]))
    first = []
    for _ in range(6):
        chosen = route.choose(frozenset())
        assert chosen is not None
        first.append(chosen.instance)
        if chosen.instance == "i0":  # i0 does not answer: the request is retried elsewhere
            retried = route.choose(frozenset({chosen.address}))
            assert retried is not None and retried.instance == "i1"
    assert first == ["i0", "i1"] * 3
