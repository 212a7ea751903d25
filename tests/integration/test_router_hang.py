"""A hung instance (SIGSTOP) behind the real router process (issue 14): no GET fails, the instance
leaves the rotation (stats say so), a POST to it gets a 504 and is not repeated elsewhere, and
draining it ends with the first-byte timeout rather than the drain timeout.

Backends are real processes (a stopped thread could not be told apart from a slow one); each test
stops only the processes it started, by pid, and lets them go (SIGCONT, SIGKILL) in teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herdsman.errors import DeployError
from herdsman.router.client import RouterClient, ensure_router, router_paths, stop_router
from tests.helpers import free_port

FIRST_BYTE = 1.0  # the route's first_byte_timeout in these tests, in seconds
WORKERS = 8  # concurrent clients of the load

BACKEND = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

name, posts = sys.argv[1], []

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(str(len(posts)).encode() if self.path == "/posts" else name.encode())

    def do_POST(self):
        posts.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.answer(name.encode() + b":posted")

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Instance:
    """A backend in its own process, answering with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-c", BACKEND, name], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        self.address = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def hang(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def end(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)

    def posts(self) -> int:
        return int(httpx.get(f"http://{self.address}/posts", timeout=5).text)


@pytest.fixture
def instances() -> Iterator[Callable[[str], Instance]]:
    started: list[Instance] = []

    def start(name: str) -> Instance:
        started.append(Instance(name))
        return started[-1]

    yield start
    for instance in started:
        instance.end()


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def router(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RouterClient, str]]:
    """A router of its own: one process, or two workers on the same listener."""
    home = tmp_path / ".herd"
    client = ensure_router(home, int(request.param))
    port = free_port()
    route = {"name": "p/web", "listen": f"127.0.0.1:{port}", "first_byte_timeout": FIRST_BYTE}
    client.call_now({"op": "set_routes", "routes": [route]})
    yield client, f"http://127.0.0.1:{port}"
    stop_router(home)


def pool(client: RouterClient, *instances: Instance) -> None:
    payload = [{"id": i.name, "address": i.address} for i in instances]
    client.call_now({"op": "set_pool", "route": "p/web", "backends": payload})


def backend_stats(client: RouterClient, instance: Instance) -> dict[str, Any]:
    backends = client.call_now({"op": "stats"})["stats"]["p/web"]["backends"]
    return next(b for b in backends if b["address"] == instance.address)


def load(url: str, seconds: float, workers: int, results: list[str], failures: list[str]) -> threading.Thread:
    """GETs from ``workers`` keep-alive connections for ``seconds``, in a thread of their own."""

    async def run(stop_at: float) -> None:
        async with httpx.AsyncClient(timeout=20) as http:

            async def worker() -> None:
                while time.monotonic() < stop_at:
                    try:
                        response = await http.get(url)
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text}")
                        results.append(response.text)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

            await asyncio.gather(*(worker() for _ in range(workers)))

    thread = threading.Thread(target=lambda: asyncio.run(run(time.monotonic() + seconds)))
    thread.start()
    return thread


def test_a_hung_instance_fails_no_get_and_leaves_the_rotation(
    router: tuple[RouterClient, str], instances: Callable[[str], Instance]
) -> None:
    client, url = router
    a, b, c = instances("a"), instances("b"), instances("c")
    pool(client, a, b, c)
    results: list[str] = []
    failures: list[str] = []
    thread = load(url, 6, WORKERS, results, failures)
    time.sleep(1)
    hung_at = len(results)
    b.hang()
    seen_ejected: dict[str, Any] = {}
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and not seen_ejected:
        stats = backend_stats(client, b)
        if stats["ejected"]:
            seen_ejected = stats
        time.sleep(0.05)
    thread.join(30)
    assert not thread.is_alive()
    assert failures == [], failures[:5]
    assert len(results) > 50 and set(results) <= {"a", "b", "c"}
    assert seen_ejected, "the stopped instance was reported ejected in stats"
    assert seen_ejected["ejections"] >= 1 and seen_ejected["ejected_for_s"] > 0
    after = backend_stats(client, b)
    assert after["timeouts"] >= 1 and after["errors"] >= after["timeouts"]
    # out of rotation quickly: each worker waited on it at most once before each ejection
    # (a timed-out request goes elsewhere), not one request in three for the whole run
    assert after["timeouts"] <= WORKERS * (after["ejections"] + 1), after
    assert after["timeouts"] < (len(results) - hung_at) / 3, after
    for healthy in (a, c):
        stats = backend_stats(client, healthy)
        assert not stats["ejected"] and stats["ejections"] == 0 and stats["timeouts"] == 0
        assert stats["requests"] > 0 and stats["errors"] == 0


def test_a_post_to_a_hung_instance_gets_a_504_and_is_not_repeated(
    router: tuple[RouterClient, str], instances: Callable[[str], Instance]
) -> None:
    client, url = router
    hung, good = instances("hung"), instances("good")
    hung.hang()
    pool(client, hung, good)  # a fresh pool: its first request goes to the first backend
    with httpx.Client(timeout=20) as http:
        response = http.post(url, content=b"order")
        assert response.status_code == 504, response.text
        assert "hung did not answer within 1s" in response.text
        assert good.posts() == 0, "a POST that may have been acted upon is never sent again"
        assert http.post(url, content=b"order").text == "good:posted"
        assert http.get(url).text == "good", "a GET is retried on another instance"
        assert good.posts() == 1
        pool(client, hung)  # a GET with nowhere else to go: a 504, not a wait without end
        response = http.get(url)
        assert response.status_code == 504 and "no instance of route p/web answered" in response.text
        streamed = http.post(url, content=iter([b"chunked ", b"order"]))  # its wait starts once sent
        assert streamed.status_code == 504 and "a POST is not retried" in streamed.text
    stats = backend_stats(client, hung)
    assert stats["timeouts"] == 4 and not stats["ejected"], "the last backend of a pool is never ejected"


def test_draining_a_hung_instance_ends_with_the_first_byte_timeout(
    router: tuple[RouterClient, str], instances: Callable[[str], Instance]
) -> None:
    client, url = router
    hung, good = instances("hung"), instances("good")
    pool(client, hung, good)
    hung.hang()
    outcomes: list[httpx.Response | Exception] = []

    def get() -> None:
        try:
            outcomes.append(httpx.get(url, timeout=20))
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=get) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5  # until the clients' threads are under way
    while time.monotonic() < deadline and not backend_stats(client, hung)["inflight"]:
        time.sleep(0.02)
    assert backend_stats(client, hung)["inflight"] > 0, "some requests are stuck on the hung instance"
    pool(client, good)
    drain_timeout = 30
    started = time.monotonic()
    reply = client.call_now(
        {"op": "drain", "route": "p/web", "addresses": [hung.address], "timeout": drain_timeout}
    )
    took = time.monotonic() - started
    for thread in threads:
        thread.join(20)
    assert took < drain_timeout / 3, f"the drain waited {took:.1f}s for requests that never finish"
    assert reply["cut"] == 0, "they ended by the first-byte timeout, not cut by the drain"
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 6
    assert {o.text for o in outcomes if isinstance(o, httpx.Response)} == {"good"}


def test_the_first_byte_timeout_is_kept_in_the_state_file_and_must_be_positive(
    tmp_path: Path, router: tuple[RouterClient, str]
) -> None:
    client, url = router
    _socket, state, _log = router_paths(tmp_path / ".herd")
    assert json.loads(state.read_text())["routes"][0]["first_byte_timeout"] == FIRST_BYTE
    listen = url.removeprefix("http://")
    with pytest.raises(DeployError, match="first_byte_timeout of route p/web must be > 0"):
        client.call_now(
            {"op": "set_routes", "routes": [{"name": "p/web", "listen": listen, "first_byte_timeout": 0}]}
        )
    assert json.loads(state.read_text())["routes"][0]["first_byte_timeout"] == FIRST_BYTE, "nothing changed"
