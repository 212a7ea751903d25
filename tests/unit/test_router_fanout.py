"""The pure half of the router's workers (`router/fanout.py`): the book a new worker is given,
and the workers' counters summed, a dead worker's kept so totals never go backwards."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.router.fanout import Book, merge_stats, prune, retire

ROUTE = {
    "name": "p/web",
    "listen": "127.0.0.1:8000",
    "host": None,
    "drain_timeout": 5,
    "first_byte_timeout": 2,
}


def backend(address: str, **counters: Any) -> dict[str, Any]:
    base = {
        "instance": f"i-{address[-1]}",
        "address": address,
        "weight": 1,
        "inflight": 0,
        "requests": 0,
        "errors": 0,
        "mean_latency_ms": 0,
        "responses_5xx": 0,
        "latency_hist": {},
        "timeouts": 0,
        "failures": 0,
        "ejected": False,
        "ejections": 0,
        "ejected_for_s": 0,
    }
    return base | counters


def stats(*backends: dict[str, Any]) -> dict[str, Any]:
    return {
        "p/web": {
            "listen": ROUTE["listen"],
            "host": None,
            "latency_bounds_ms": [1.0],
            "backends": list(backends),
        }
    }


def test_the_book_follows_routes_pools_and_drains() -> None:
    book = Book()
    book.set_routes([ROUTE, ROUTE | {"name": "q/web", "listen": "127.0.0.1:8001"}])
    book.set_pool("p/web", [{"id": "a", "address": "127.0.0.1:1"}, {"id": "b", "address": "127.0.0.1:2"}])
    book.drain("p/web", ["127.0.0.1:1"])
    assert book.state()["pools"]["p/web"] == [{"id": "b", "address": "127.0.0.1:2"}]
    book.set_routes([], prefix="q/")  # one environment's routes go, the other's stay
    assert [r["name"] for r in book.state()["routes"]] == ["p/web"]
    copy = Book()
    copy.restore(book.state())
    assert copy.state() == book.state()


def test_the_book_refuses_what_the_router_refuses_before_any_change() -> None:
    book = Book()
    book.set_routes([ROUTE])
    with pytest.raises(ValueError, match="first_byte_timeout"):
        book.set_routes([ROUTE | {"name": "p/api", "first_byte_timeout": 0}], prefix="p/")
    assert list(book.routes) == ["p/web"]
    with pytest.raises(KeyError):
        book.set_pool("p/nothing", [])
    book.set_pool("p/web", [{"id": "a", "address": "127.0.0.1:1"}])
    for bad in (
        {"id": "b", "address": "127.0.0.1:http"},
        {"id": "b", "address": "127.0.0.1:2", "weight": "x"},
    ):
        with pytest.raises(ValueError):  # a worker's router refuses it: the book keeps the pool before
            book.set_pool("p/web", [bad])
        assert book.pools["p/web"] == [{"id": "a", "address": "127.0.0.1:1"}]


def test_counters_are_summed_per_backend_and_the_mean_weighted() -> None:
    one = stats(
        backend("127.0.0.1:1", requests=10, mean_latency_ms=2.0, inflight=1, latency_hist={"3": 10}),
        backend("127.0.0.1:2", requests=1, errors=1, failures=1),
    )
    two = stats(
        backend("127.0.0.1:1", requests=30, mean_latency_ms=6.0, latency_hist={"3": 5, "9": 25}, ejected=True)
    )
    merged = merge_stats([one, two])["p/web"]
    a, b = merged["backends"]
    assert (a["requests"], a["inflight"], a["mean_latency_ms"]) == (40, 1, 5.0)
    assert a["latency_hist"] == {"3": 15, "9": 25} and a["ejected"] is True
    assert (b["requests"], b["errors"], b["failures"]) == (1, 1, 1)
    assert merged["listen"] == ROUTE["listen"] and merged["latency_bounds_ms"] == [1.0]


def test_a_dead_workers_counters_are_kept_and_only_for_backends_still_pooled() -> None:
    dead = stats(
        backend("127.0.0.1:1", requests=7, inflight=3, latency_hist={"2": 7}, ejected=True),
        backend("127.0.0.1:9", requests=4),
    )
    departed = retire({}, dead)
    live = stats(backend("127.0.0.1:1", requests=2, latency_hist={"2": 2}))
    merged = merge_stats([live], departed)["p/web"]["backends"]
    assert len(merged) == 1, "a backend no worker pools any more is not listed"
    assert (merged[0]["requests"], merged[0]["inflight"], merged[0]["ejected"]) == (9, 0, False)
    assert merged[0]["latency_hist"] == {"2": 9}


def test_routes_of_the_book_are_listed_when_no_worker_answered() -> None:
    assert merge_stats([], {}, {"p/web": ROUTE})["p/web"]["backends"] == []
    assert merge_stats([]) == {}


counts = st.lists(st.integers(0, 1000), min_size=1, max_size=4)


@given(st.lists(st.tuples(counts, st.booleans()), min_size=1, max_size=6))
def test_totals_never_go_backwards_as_workers_die_and_start_again(
    history: list[tuple[list[int], bool]],
) -> None:
    """Each round the live workers count more; some rounds one of them dies and starts from zero."""
    departed: dict[str, Any] = {}
    alive = [0, 0]
    last_total = 0
    for increments, dies in history:
        alive = [n + increments[i % len(increments)] for i, n in enumerate(alive)]
        parts = [stats(backend("127.0.0.1:1", requests=n)) for n in alive]
        total = merge_stats(parts, departed)["p/web"]["backends"][0]["requests"]
        assert total >= last_total and total == sum(alive) + (
            departed["p/web"]["backends"][0]["requests"] if departed else 0
        )
        last_total = total
        if dies:
            departed = retire(departed, parts[0])
            alive[0] = 0


def test_a_dead_workers_counters_go_to_the_same_instance_only_and_leave_with_it() -> None:
    departed = retire({}, stats(backend("127.0.0.1:1", instance="web-1-a", requests=5)))
    later = stats(backend("127.0.0.1:1", instance="web-2-b", requests=1))  # the same port, reused
    assert merge_stats([later], departed)["p/web"]["backends"][0]["requests"] == 1
    assert prune(departed, {"p/web": [{"id": "web-1-a", "address": "127.0.0.1:1"}]}) == departed
    assert prune(departed, {"p/web": [{"id": "web-2-b", "address": "127.0.0.1:1"}]}) == {}


def test_a_refusal_is_raised_only_after_every_gone_worker_is_killed(tmp_path: Any) -> None:
    """The promise of a change: once it is answered, no worker still runs with the old pool. A
    refusal by one worker must not leave another, that could not be told, running (review: the
    first refusal was raised before the later workers' replies were looked at)."""
    import asyncio

    from herdsman.router.workers import WorkerGone, WorkerSet

    workers = WorkerSet(3, tmp_path / "router.sock")
    answers: list[Any] = [{"ok": False, "error": "no such route"}, WorkerGone("w1"), {"ok": True}]
    for worker, answer in zip(workers.workers, answers, strict=True):
        worker.ready = True

        async def call(request: dict[str, Any], timeout: float = 0, answer: Any = answer) -> dict[str, Any]:
            if isinstance(answer, BaseException):
                raise answer
            return dict(answer)

        worker.call = call  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="no such route"):
        asyncio.run(workers._fan({"op": "set_pool"}))
    assert [w.ready for w in workers.workers] == [True, False, True], "the gone one killed"
