"""Both router engines through the one protocol the executor and the agent use (`deploy.execute.Pools`:
set_routes, set_pool, drain, stats): the embedded router and a real HAProxy that herdsman runs.
Pool switch under load with no failed request, drain letting in-flight requests finish, refused
connections retried, a GET with no first byte retried and a POST never repeated, 503 with an empty
pool, counters. (The embedded router's own behaviour, its control socket and its 504s: test_router.py.)"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herdsman.router.client import RouterPools, ensure_router, stop_router
from herdsman.router.haproxy.engine import HaproxyPools
from tests.conftest import need_command
from tests.integration.test_router import Backend, free_port

ROUTE = "p/web"


class Engine:
    """An engine under test: its pools, the route's URL, and how to stop it."""

    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.home = home
        self.pools: Any
        if name == "haproxy":
            self.pools = HaproxyPools(home, need_command("haproxy"))
        else:  # "embedded", or "embedded-2": two workers on the same listener
            self.pools = RouterPools(ensure_router(home, 2 if name == "embedded-2" else 1))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        route = {
            "name": ROUTE,
            "listen": f"127.0.0.1:{self.port}",
            "drain_timeout": 10,
            "first_byte_timeout": 5,
        }
        asyncio.run(self.pools.set_routes("p", [route]))

    def pool(self, *backends: Backend) -> None:
        asyncio.run(self.pools.set_pool(ROUTE, [(b.name, b.address, 1) for b in backends]))

    def drain(self, *backends: Backend, timeout: float = 10) -> None:
        asyncio.run(self.pools.drain(ROUTE, [b.address for b in backends], timeout))

    def stats(self) -> list[dict[str, Any]]:
        return list(asyncio.run(self.pools.stats())[ROUTE]["backends"])

    def stop(self) -> None:
        if self.name == "haproxy":
            self.pools.stop()
        else:
            stop_router(self.home)


@pytest.fixture(params=["embedded", "embedded-2", "haproxy"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    made = Engine(str(request.param), tmp_path / ".herd")
    yield made
    made.stop()


def test_pool_switch_under_load_fails_nothing(engine: Engine) -> None:
    old, new = [Backend(f"old{i}") for i in range(3)], [Backend(f"new{i}") for i in range(3)]
    engine.pool(*old)
    results: list[str] = []
    failures: list[str] = []

    async def load(stop_at: float) -> None:
        async with httpx.AsyncClient(timeout=5) as http:

            async def worker() -> None:
                while time.monotonic() < stop_at:
                    try:
                        response = await http.get(engine.url)
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text}")
                        results.append(response.text)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

            await asyncio.gather(*(worker() for _ in range(8)))

    thread = threading.Thread(target=lambda: asyncio.run(load(time.monotonic() + 3)))
    thread.start()
    time.sleep(1)
    engine.pool(*new)
    engine.drain(*old, timeout=5)
    for backend in old:
        backend.stop()
    thread.join()
    assert failures == [] and len(results) > 50  # traffic flowed throughout (a loaded machine is slow)
    assert set(results) <= {b.name for b in old + new}
    assert results[-1].startswith("new")
    assert {s["instance"] for s in engine.stats()} == {b.name for b in new}
    for backend in new:
        backend.stop()


def test_drain_waits_for_requests_in_flight_to_finish(engine: Engine) -> None:
    slow, fresh = Backend("slow"), Backend("fresh")
    engine.pool(slow)
    outcome: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: outcome.append(httpx.get(f"{engine.url}/slow/1.5", timeout=10)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5  # both requests reached the backend
    while time.monotonic() < deadline and sum(s["inflight"] for s in engine.stats()) < 2:
        time.sleep(0.01)
    engine.pool(fresh)
    assert httpx.get(engine.url).text == "fresh", "new requests go to the new pool at once"
    engine.drain(slow, timeout=10)
    assert len(outcome) == 2, "the drain returned only once its requests were answered"
    assert [(r.status_code, r.text) for r in outcome] == [(200, "slow"), (200, "slow")]
    assert [s["instance"] for s in engine.stats()] == ["fresh"]
    slow.stop(), fresh.stop()


def test_a_refused_connection_is_retried_on_another_instance(engine: Engine) -> None:
    alive = Backend("alive")
    dead_port = free_port()  # nothing listens there: connections are refused
    asyncio.run(
        engine.pools.set_pool(ROUTE, [("dead", f"127.0.0.1:{dead_port}", 1), ("alive", alive.address, 1)])
    )
    with httpx.Client() as http:
        assert all(http.get(engine.url).text == "alive" for _ in range(10))
        assert http.post(engine.url, content=b"x").text == "alive:x", "nothing was sent: POST is retried too"
    alive.stop()


def test_an_empty_pool_answers_503_and_requests_are_counted(engine: Engine) -> None:
    assert httpx.get(engine.url).status_code == 503
    a, b = Backend("a"), Backend("b")
    engine.pool(a, b)
    with httpx.Client() as http:
        seen = [http.get(engine.url).text for _ in range(20)]
    assert seen.count("a") == 10 and seen.count("b") == 10, "round robin, per request on one connection"
    stats = {s["instance"]: s for s in engine.stats()}
    assert {n: (s["requests"], s["inflight"], s["errors"]) for n, s in stats.items()} == {
        "a": (10, 0, 0),
        "b": (10, 0, 0),
    }
    assert stats["a"]["address"] == a.address
    engine.pool()
    assert httpx.get(engine.url).status_code == 503
    a.stop(), b.stop()


def test_haproxy_outlives_its_client_and_keeps_its_pools_across_a_reload(tmp_path: Path) -> None:
    made = Engine("haproxy", tmp_path / ".herd")
    try:
        backend = Backend("kept")
        made.pool(backend)
        master = made.pools.master_pid()
        assert master is not None and os.readlink(f"/proc/{master}/exe").endswith("haproxy")
        assert os.getsid(master) != os.getsid(0), "its own session: a dying agent does not take it along"
        again = HaproxyPools(tmp_path / ".herd")  # a new agent: what runs is read back
        wider = {
            "name": ROUTE,
            "listen": f"127.0.0.1:{made.port}",
            "drain_timeout": 10,
            "first_byte_timeout": 2,
        }
        asyncio.run(again.set_routes("p", [wider]))  # a route change reloads
        assert "timeout server 2000ms" in again.config_path.read_text()
        assert httpx.get(made.url).text == "kept", "the reloaded worker has the pool"
        assert again.master_pid() == master, "a reload, not a restart"
        backend.stop()
    finally:
        made.stop()


class Silent:
    """Accepts connections and reads requests, never answers: a hung instance. Counts the requests."""

    def __init__(self) -> None:
        import socket

        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.name = "silent"
        self.held: list[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: Any) -> None:
        try:
            while data := conn.recv(65536):
                self.requests += [
                    line for line in data.split(b"\r\n") if line.startswith((b"GET ", b"POST "))
                ]
        except OSError:
            pass

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_no_first_byte_retries_a_get_elsewhere_and_never_repeats_a_post(
    tmp_path: Path, engine: Engine
) -> None:
    route = {
        "name": ROUTE,
        "listen": f"127.0.0.1:{engine.port}",
        "drain_timeout": 10,
        "first_byte_timeout": 0.5,
    }
    asyncio.run(engine.pools.set_routes("p", [route]))
    silent, alive = Silent(), Backend("alive")
    engine.pool(silent, alive)
    with httpx.Client(timeout=10) as http:
        gets = [http.get(engine.url) for _ in range(4)]
        posts = [http.post(engine.url, content=b"x") for _ in range(4)]
    assert [(r.status_code, r.text) for r in gets] == [(200, "alive")] * 4, "a GET with no answer is retried"
    hung_posts = [r for r in posts if r.status_code != 200]
    assert all(r.status_code == 504 for r in hung_posts) and hung_posts, [r.status_code for r in posts]
    assert all(r.text == "alive:x" for r in posts if r.status_code == 200)
    sent_posts = [line for line in silent.requests if line.startswith(b"POST ")]
    assert len(sent_posts) == len(hung_posts), (
        "each POST the hung instance got was sent there once, not again"
    )
    silent.stop(), alive.stop()
