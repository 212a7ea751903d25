"""The embedded router as its own process, in front of real backends: zero failed requests while
pools switch, drain, retries, 503, Host routing. (Deploys through it: test_deploys.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from herdsman.errors import DeployError
from herdsman.router.client import RouterClient, ensure_router, router_paths, stop_router


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Backend:
    """A small HTTP/1.1 keep-alive server answering with its own name."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.startswith("/slow"):
                    time.sleep(float(self.path.rsplit("/", 1)[-1]))
                body = outer.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + len(outer.name) + 1))
                self.end_headers()
                self.wfile.write(outer.name.encode() + b":" + body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def router(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RouterClient, str]]:
    """A router of its own: one process, or two workers on the same listener (`[router] workers`)."""
    home = tmp_path / ".herd"
    client = ensure_router(home, int(request.param))
    port = free_port()
    client.call_now({"op": "set_routes", "routes": [{"name": "p/web", "listen": f"127.0.0.1:{port}"}]})
    yield client, f"http://127.0.0.1:{port}"
    stop_router(home)


def pool(client: RouterClient, *backends: Backend, weights: tuple[int, ...] = ()) -> None:
    payload = [
        {"id": b.name, "address": b.address, "weight": (weights[i] if weights else 1)}
        for i, b in enumerate(backends)
    ]
    client.call_now({"op": "set_pool", "route": "p/web", "backends": payload})


def test_per_request_balancing_over_one_connection_and_weights(router: tuple[RouterClient, str]) -> None:
    client, url = router
    a, b = Backend("a"), Backend("b")
    pool(client, a, b)
    with httpx.Client() as http:
        seen = [http.get(url).text for _ in range(10)]
    assert seen.count("a") == 5 and seen.count("b") == 5, "one keep-alive client connection, both backends"
    pool(client, a, b, weights=(3, 1))
    with httpx.Client() as http:
        seen = [http.get(url).text for _ in range(40)]
    assert seen.count("a") == 30
    stats = client.call_now({"op": "stats"})["stats"]["p/web"]["backends"]
    assert sum(s["requests"] for s in stats) >= 50
    a.stop(), b.stop()


def test_no_backend_is_a_clear_503_and_unknown_host_404(
    tmp_path: Path, router: tuple[RouterClient, str]
) -> None:
    client, url = router
    response = httpx.get(url)
    assert response.status_code == 503 and "no healthy instance for route p/web" in response.text
    port = url.rsplit(":", 1)[1]
    client.call_now(
        {
            "op": "set_routes",
            "routes": [{"name": "p/web", "listen": f"127.0.0.1:{port}", "host": "web.localhost"}],
        }
    )
    assert httpx.get(url, headers={"Host": "other.localhost"}).status_code == 404


def test_pool_switch_under_load_fails_nothing(router: tuple[RouterClient, str]) -> None:
    client, url = router
    old, new = [Backend(f"old{i}") for i in range(3)], [Backend(f"new{i}") for i in range(3)]
    pool(client, *old)
    results: list[str] = []
    failures: list[str] = []

    async def load(stop_at: float) -> None:
        async with httpx.AsyncClient(timeout=5) as http:

            async def worker() -> None:
                while time.monotonic() < stop_at:
                    try:
                        response = await http.get(url)
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text}")
                        results.append(response.text)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

            await asyncio.gather(*(worker() for _ in range(8)))

    thread = threading.Thread(target=lambda: asyncio.run(load(time.monotonic() + 3)))
    thread.start()
    time.sleep(1)
    pool(client, *new)
    client.call_now({"op": "drain", "route": "p/web", "addresses": [b.address for b in old], "timeout": 5})
    for backend in old:
        backend.stop()
    thread.join()
    assert failures == [] and len(results) > 50  # traffic flowed throughout (a loaded machine is slow)
    assert set(results) <= {b.name for b in old + new}
    assert results[-1].startswith("new")
    for backend in new:
        backend.stop()


def test_once_set_pool_returns_no_connection_reaches_a_removed_backend(
    router: tuple[RouterClient, str],
) -> None:
    """Kept-alive client connections spread over the workers; the first request each sends after
    `set_pool` returned goes to the new pool, whichever worker holds it."""
    client, url = router
    a, b = Backend("a"), Backend("b")
    pool(client, a)
    clients = [httpx.Client(timeout=10) for _ in range(12)]
    try:
        assert {c.get(url).text for c in clients} == {"a"}
        pool(client, b)
        assert [c.get(url).text for c in clients] == ["b"] * len(clients)
    finally:
        for c in clients:
            c.close()
        a.stop(), b.stop()


def test_killed_backend_is_retried_for_gets(router: tuple[RouterClient, str]) -> None:
    client, url = router
    alive = Backend("alive")
    dead_port = free_port()  # nothing listens there: connections are refused
    client.call_now(
        {
            "op": "set_pool",
            "route": "p/web",
            "backends": [
                {"id": "dead", "address": f"127.0.0.1:{dead_port}"},
                {"id": "alive", "address": alive.address},
            ],
        }
    )
    with httpx.Client() as http:
        assert all(http.get(url).text == "alive" for _ in range(10))
        assert http.post(url, content=b"x").text == "alive:x", "a refused connection is retried for POST too"
    alive.stop()


def test_drain_lets_in_flight_finish_and_cuts_hung_requests_with_504(
    router: tuple[RouterClient, str],
) -> None:
    client, url = router
    slow = Backend("slow")
    pool(client, slow)
    outcome: dict[str, httpx.Response] = {}
    threading.Thread(
        target=lambda: outcome.setdefault("ok", httpx.get(f"{url}/slow/0.5", timeout=10))
    ).start()
    threading.Thread(
        target=lambda: outcome.setdefault("hung", httpx.get(f"{url}/slow/5", timeout=10))
    ).start()
    deadline = (
        time.monotonic() + 5
    )  # both requests reached the backend (threads start slowly on a busy machine)
    while time.monotonic() < deadline:
        if client.call_now({"op": "stats"})["stats"]["p/web"]["backends"][0]["inflight"] == 2:
            break
        time.sleep(0.01)
    pool(client)  # out of the pool; then drain with a 1 s timeout
    reply = client.call_now({"op": "drain", "route": "p/web", "addresses": [slow.address], "timeout": 1})
    time.sleep(0.3)
    assert outcome["ok"].status_code == 200 and outcome["ok"].text == "slow"
    assert outcome["hung"].status_code == 504 and reply["cut"] == 1
    slow.stop()


def test_control_socket_is_private_and_state_survives_a_restart(
    tmp_path: Path, router: tuple[RouterClient, str]
) -> None:
    client, url = router
    backend = Backend("b")
    pool(client, backend)
    socket_path, _state, _log = router_paths(tmp_path / ".herd")
    assert socket_path.stat().st_mode & 0o777 == 0o600
    stop_router(tmp_path / ".herd")
    for _ in range(100):
        if not socket_path.exists():
            break
        time.sleep(0.05)
    ensure_router(tmp_path / ".herd")
    assert httpx.get(url).text == "b", "the restarted router serves the last pool from its state file"
    backend.stop()


class ClosingBackend:
    """Answers the first request of each connection with keep-alive framing, and closes the
    connection on the second without answering: a keep-alive timeout firing just as a request
    arrives on a pooled connection (one closed earlier, the router notices and never reuses)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            for answer in (True, False):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                if answer:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def stop(self) -> None:
        self.sock.close()


def test_reused_connection_without_response_is_retried_for_get_only(router: tuple[RouterClient, str]) -> None:
    client, url = router
    backend = ClosingBackend()
    client.call_now(
        {"op": "set_pool", "route": "p/web", "backends": [{"id": "closing", "address": backend.address}]}
    )
    with httpx.Client() as http:
        assert http.get(url).text == "ok"  # leaves a pooled connection that closes on its next request
        assert http.get(url).text == "ok", "no answer on the reused connection: the GET is sent again"
        assert backend.requests == 3
        response = http.post(url, content=b"pay once")
    assert response.status_code == 502 and "is not retried" in response.text
    assert backend.requests == 4, "the POST was sent once"
    backend.stop()


def test_a_dead_worker_is_started_again_and_the_others_keep_serving(tmp_path: Path) -> None:
    """`workers = 2`: SIGKILL one worker; new connections reach the other at once, the parent
    starts it again with the current pool, and the summed counters never go backwards."""
    home = tmp_path / ".herd"
    client = ensure_router(home, 2)
    port = free_port()
    client.call_now({"op": "set_routes", "routes": [{"name": "p/web", "listen": f"127.0.0.1:{port}"}]})
    a, b = Backend("a"), Backend("b")
    pool(client, a, b)
    url = f"http://127.0.0.1:{port}"
    try:
        assert {httpx.get(url).text for _ in range(20)} == {"a", "b"}

        def requests_of_b() -> int:
            backends = client.call_now({"op": "stats"})["stats"]["p/web"]["backends"]
            return sum(s["requests"] for s in backends if s["address"] == b.address)

        before = requests_of_b()
        first = client.call_now({"op": "ping"})["workers"]
        assert len(first) == 2 and all(first)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while first[0] in client.call_now({"op": "ping"})["workers"] and time.monotonic() < deadline:
            time.sleep(0.01)  # the parent saw it die (its listening socket is closed)
        served = [httpx.get(url, headers={"Connection": "close"}).text for _ in range(30)]
        assert sorted(set(served)) == ["a", "b"], "the other worker kept the listener and the pool"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ping = client.call_now({"op": "ping"})
            if all(ping["workers"]) and first[0] not in ping["workers"]:
                break
            time.sleep(0.05)
        assert all(ping["workers"]) and ping["restarts"] == 1 and first[1] in ping["workers"]
        pool(client, b)  # the restarted worker is told too: b only, whichever worker answers
        assert {httpx.get(url, headers={"Connection": "close"}).text for _ in range(30)} == {"b"}
        assert requests_of_b() >= before + 30, (
            "the dead worker's counters were kept; b's requests since are added"
        )
    finally:
        stop_router(home)
        a.stop(), b.stop()


def test_a_worker_that_cannot_be_told_is_replaced_before_set_pool_returns(tmp_path: Path) -> None:
    """`workers = 2`, one worker stopped (SIGSTOP): `set_pool` kills it rather than answer while it
    still holds the old pool; the worker started in its place serves the new one."""
    home = tmp_path / ".herd"
    client = ensure_router(home, 2)
    port = free_port()
    client.call_now({"op": "set_routes", "routes": [{"name": "p/web", "listen": f"127.0.0.1:{port}"}]})
    a, b = Backend("a"), Backend("b")
    url = f"http://127.0.0.1:{port}"
    stuck = client.call_now({"op": "ping"})["workers"][0]
    try:
        pool(client, a)
        os.kill(stuck, signal.SIGSTOP)
        pool(client, b)  # answers once the stopped worker is gone (after TELL_TIMEOUT)
        assert stuck not in client.call_now({"op": "ping"})["workers"]
        deadline = time.monotonic() + 30
        while not all(client.call_now({"op": "ping"})["workers"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(client.call_now({"op": "ping"})["workers"]), "the replacement came up"
        assert {httpx.get(url, headers={"Connection": "close"}).text for _ in range(30)} == {"b"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)  # ours (its parent kills it too)
        stop_router(home)
        a.stop(), b.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_address_taken_by_another_router_is_refused(tmp_path: Path, workers: int) -> None:
    """SO_REUSEPORT must not let two projects' routers share a port: the second is refused."""
    first, second = ensure_router(tmp_path / "one", 2), ensure_router(tmp_path / "two", workers)
    port = free_port()
    route = {"name": "p/web", "listen": f"127.0.0.1:{port}"}
    try:
        first.call_now({"op": "set_routes", "routes": [route]})
        with pytest.raises(DeployError, match="in use"):
            second.call_now({"op": "set_routes", "routes": [route]})
    finally:
        stop_router(tmp_path / "one"), stop_router(tmp_path / "two")


def test_interim_pool_changes_reach_the_state_file_and_a_drain_writes_at_once(
    tmp_path: Path, router: tuple[RouterClient, str]
) -> None:
    """A burst's interim pool changes are written to the state file together a moment later (see
    tests/unit/test_router_state_file.py for the rule); a plain change and a drain are written
    before they are answered, so a router restarted from the file loads no stopped instance."""
    client, url = router
    _socket, state_file, _log = router_paths(tmp_path / ".herd")

    def pool() -> list[str]:
        return [b["address"] for b in json.loads(state_file.read_text())["pools"].get("p/web", [])]

    def set_pool(backends: list[Backend], interim: bool = False) -> None:
        request = {
            "op": "set_pool",
            "route": "p/web",
            "backends": [{"id": x.name, "address": x.address} for x in backends],
            "interim": interim,
        }
        client.call_now(request)

    a, b, c = Backend("a"), Backend("b"), Backend("c")
    try:
        set_pool([a])
        assert pool() == [a.address], "a plain change is written before it is answered"
        set_pool([a, b], interim=True)
        set_pool([a, b, c], interim=True)
        deadline = time.monotonic() + 10
        while pool() != [a.address, b.address, c.address]:
            assert time.monotonic() < deadline, f"the interim changes never reached the file: {pool()}"
            time.sleep(0.05)
        set_pool([b], interim=True)
        client.call_now({"op": "drain", "route": "p/web", "addresses": [a.address, c.address], "timeout": 5})
        assert pool() == [b.address], "the drain answered with the file holding the change before it"
        assert httpx.get(url).text == "b"
    finally:
        for x in (a, b, c):
            x.stop()


def test_a_refused_pool_changes_nothing_on_one_worker_or_many(
    tmp_path: Path, router: tuple[RouterClient, str]
) -> None:
    """A pool the router refuses (a port that is not a number) leaves the pool and the state file
    as they were: with workers, the parent's book is checked before any worker is told."""
    client, url = router
    _socket, state_file, _log = router_paths(tmp_path / ".herd")
    good = Backend("good")
    try:
        pool(client, good)
        with pytest.raises(DeployError):
            client.call_now(
                {"op": "set_pool", "route": "p/web", "backends": [{"id": "x", "address": "127.0.0.1:http"}]}
            )
        assert httpx.get(url).text == "good"
        pools = json.loads(state_file.read_text())["pools"]["p/web"]
        assert [b["address"] for b in pools] == [good.address]
        assert not client.call_now({"op": "ping"}).get("restarts"), "no worker was killed for it"
    finally:
        good.stop()
