"""HTTP/1.1 through the embedded router, byte by byte: the cases a proxy gets wrong when it only
ever sees small GETs. The backend parses with h11 (an independent implementation) and records
exactly what reached it; clients are raw sockets where the test needs to control the bytes."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import httpx
import pytest

from herdsman.router.client import RouterClient, ensure_router, stop_router
from tests.helpers import free_port

Handler = Callable[[h11.Request, bytes], list[bytes]]


class RawBackend:
    """Parses each request with h11, records it, and answers with the raw byte pieces the handler
    returns (sent apart, with a pause between them); an empty piece means: close the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[h11.Request, bytes]] = []
        self.answered = threading.Event()  # set when a whole response has been sent
        self.cut = threading.Event()  # set when the router reset a connection mid-response
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        parser = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        with conn:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = conn.recv(65536)
                    if not data:
                        return
                    parser.receive_data(data)
                elif isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    self.seen.append((request, body))
                    for piece in self.handler(request, body):
                        if not piece:
                            return
                        try:
                            conn.sendall(piece)
                        except ConnectionError:
                            self.cut.set()  # the router gave up this connection
                            return
                        time.sleep(0.02)
                    self.answered.set()
                    leftover, _closed = parser.trailing_data  # the response went out raw, so
                    parser = h11.Connection(h11.SERVER)  # a new parser for the next request
                    if leftover:
                        parser.receive_data(bytes(leftover))
                elif isinstance(event, h11.ConnectionClosed):
                    return

    def stop(self) -> None:
        self.sock.close()


def ok(text: bytes, *extra: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(text) + b"".join(extra) + b"\r\n"
    return [head + text]


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def routed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[RawBackend], int]]:
    """A router of its own (one process, or two workers); ``routed(backend)`` puts the backend in
    the pool, gives the port."""
    home = tmp_path / ".herd"
    client: RouterClient = ensure_router(home, int(request.param))
    port = free_port()
    client.call_now({"op": "set_routes", "routes": [{"name": "p/web", "listen": f"127.0.0.1:{port}"}]})

    def route(backend: RawBackend) -> int:
        client.call_now(
            {"op": "set_pool", "route": "p/web", "backends": [{"id": "b", "address": backend.address}]}
        )
        return port

    yield route
    stop_router(home)


def exchange(port: int, data: bytes, *, until: bytes | None = None, timeout: float = 5) -> bytes:
    """Send raw bytes, read until ``until`` appears or the router closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        while until is None or until not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pipelined_requests_are_answered_in_order(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: ok(request.target))
    port = routed(backend)
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    got = exchange(port, requests, until=b"/4")
    assert got.count(b"HTTP/1.1 200 OK") == 5
    places = [got.find(b"\r\n\r\n/%d" % i) for i in range(5)]
    assert -1 not in places and places == sorted(places), "each answer in the order asked"
    assert [r.target for r, _ in backend.seen] == [b"/%d" % i for i in range(5)]
    backend.stop()


def test_a_chunked_request_body_is_streamed_through_intact(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: ok(hashlib.sha256(body).hexdigest().encode()))
    port = routed(backend)
    payload = bytes(range(256)) * 3000  # 768 KB, sent as chunks of uneven sizes

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 7001):
            yield payload[i : i + 7001]

    response = httpx.post(f"http://127.0.0.1:{port}/up", content=chunks(), timeout=10)
    assert response.text == hashlib.sha256(payload).hexdigest()
    request, _ = backend.seen[0]
    assert (b"transfer-encoding", b"chunked") in request.headers
    backend.stop()


def test_a_body_over_the_retry_limit_is_streamed_by_its_length(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: ok(b"%d" % len(body)))
    port = routed(backend)
    payload = b"z" * (3 << 20)
    with httpx.Client(timeout=10) as http:
        assert http.put(f"http://127.0.0.1:{port}/big", content=payload).text == str(len(payload))
        assert http.get(f"http://127.0.0.1:{port}/after").status_code == 200, "the connection goes on"
    backend.stop()


def test_large_chunked_and_until_close_responses_arrive_whole(routed: Callable[[RawBackend], int]) -> None:
    big = hashlib.sha256(b"seed").digest() * 100_000  # 3.2 MB

    def handler(request: h11.Request, body: bytes) -> list[bytes]:
        if request.target == b"/big":
            return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big), big]
        if request.target == b"/chunked":
            return [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n",
            ]
        return [b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b""]  # no framing: until close

    backend = RawBackend(handler)
    port = routed(backend)
    with httpx.Client(timeout=10) as http:
        assert hashlib.sha256(http.get(f"http://127.0.0.1:{port}/big").content).digest() == (
            hashlib.sha256(big).digest()
        )
        assert http.get(f"http://127.0.0.1:{port}/chunked").text == "hello world"
        response = http.get(f"http://127.0.0.1:{port}/close")
        assert response.text == "until the end" and response.headers["connection"] == "close"
    backend.stop()


def test_a_slow_reader_pauses_the_backend_and_gets_every_byte(routed: Callable[[RawBackend], int]) -> None:
    big = b"0123456789abcdef" * (3 << 19)  # 24 MB: more than every socket buffer on the way
    backend = RawBackend(
        lambda request, body: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big), big]
    )
    port = routed(backend)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = bytearray(sock.recv(4096))
        time.sleep(1)  # not reading: the router must stop reading the backend, not buffer 24 MB
        assert not backend.answered.is_set(), "the backend could send everything: nothing held it back"
        while len(got) < len(big):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    assert got.endswith(big) and got.startswith(b"HTTP/1.1 200")
    backend.stop()


def test_head_responses_have_no_body_and_keep_the_connection(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(
        lambda request, body: (
            [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]
            if request.method == b"HEAD"
            else ok(b"after")
        )
    )
    port = routed(backend)
    got = exchange(
        port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", until=b"after"
    )
    assert got.count(b"HTTP/1.1 200 OK") == 2 and got.endswith(b"after")
    backend.stop()


def test_an_http_1_0_backend_connection_is_reused_only_when_it_says_keep_alive(
    routed: Callable[[RawBackend], int], request: pytest.FixtureRequest
) -> None:
    plain = RawBackend(lambda request, body: [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    port = routed(plain)
    with httpx.Client() as http:
        assert [http.get(f"http://127.0.0.1:{port}/").text for _ in range(3)] == ["ok"] * 3
    assert plain.connections == 3, "HTTP/1.0 without keep-alive: the backend closes, never pooled"
    plain.stop()
    kept = RawBackend(
        lambda request, body: [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"]
    )
    port = routed(kept)
    with httpx.Client() as http:
        assert [http.get(f"http://127.0.0.1:{port}/").text for _ in range(3)] == ["ok"] * 3
    # the HTTP/1.0 answer ends the client's connection: its next one may reach another worker,
    # which opens its own; each worker reuses its one
    assert kept.connections <= request.node.callspec.params["routed"]
    kept.stop()


def test_expect_continue_is_answered_by_the_router(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: ok(body))
    port = routed(backend)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(1000).endswith(b"hello")
    request, _ = backend.seen[0]
    assert all(name != b"expect" for name, _ in request.headers), "the instance never sees Expect"
    backend.stop()


def test_interim_responses_are_not_passed_on(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", *ok(b"x")])
    port = routed(backend)
    response = httpx.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 200 and response.text == "x"
    backend.stop()


def test_hop_by_hop_headers_stop_at_the_router_and_the_client_is_named(
    routed: Callable[[RawBackend], int],
) -> None:
    backend = RawBackend(
        lambda request, body: ok(b"x", b"Connection: keep-alive, X-Internal\r\nX-Internal: 1\r\n")
    )
    port = routed(backend)
    response = httpx.get(
        f"http://127.0.0.1:{port}/",
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "5", "X-End": "1"},
    )
    request, _ = backend.seen[0]
    names = {name for name, _ in request.headers}
    assert {b"x-hop", b"keep-alive"} & names == set() and b"x-end" in names
    assert (b"x-forwarded-for", b"127.0.0.1") in request.headers
    assert "x-internal" not in response.headers
    backend.stop()


def test_an_upgrade_is_answered_as_a_plain_request_then_the_connection_ends(
    routed: Callable[[RawBackend], int],
) -> None:
    backend = RawBackend(lambda request, body: ok(b"plain"))
    port = routed(backend)
    got = exchange(
        port,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    )
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"plain"), "and then closed (read to the end)"
    request, _ = backend.seen[0]
    assert all(
        name not in (b"upgrade", b"connection") or value == b"keep-alive" for name, value in request.headers
    )
    backend.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_ambiguous_requests_are_refused_with_400(
    routed: Callable[[RawBackend], int], request_bytes: bytes
) -> None:
    backend = RawBackend(lambda request, body: ok(b"x"))
    port = routed(backend)
    got = exchange(port, request_bytes)
    assert got.startswith(b"HTTP/1.1 400") and backend.seen == []
    backend.stop()


def test_a_request_head_over_64_kib_is_refused(routed: Callable[[RawBackend], int]) -> None:
    backend = RawBackend(lambda request, body: ok(b"x"))
    port = routed(backend)
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(80))  # 80 KB of them
    got = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert got.startswith(b"HTTP/1.1 400") and b"request head over 65536 bytes" in got
    assert backend.seen == []
    backend.stop()


def test_a_client_leaving_mid_response_frees_the_backend(
    tmp_path: Path, routed: Callable[[RawBackend], int]
) -> None:
    big = b"x" * (8 << 20)
    backend = RawBackend(
        lambda request, body: (
            ok(b"small")
            if request.target == b"/small"
            else [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big), big]
        )
    )
    port = routed(backend)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
    client = RouterClient(tmp_path / ".herd" / "run" / "router.sock")
    for _ in range(100):
        stats = client.call_now({"op": "stats"})["stats"]["p/web"]["backends"][0]
        if stats["inflight"] == 0:
            break
        time.sleep(0.05)
    assert stats["inflight"] == 0
    assert backend.cut.wait(5), "the upstream connection is reset, not read to its end for nobody"
    assert httpx.get(f"http://127.0.0.1:{port}/small").text == "small"
    backend.stop()


def test_small_responses_in_pieces_arrive_whole_and_a_closing_client_is_told(
    routed: Callable[[RawBackend], int],
) -> None:
    """A response under 64 KiB is sent on in one write once whole, however the backend's bytes
    came (the pieces are never joined: `router/upstream.py`); a head with nothing to change goes
    on as the backend's very bytes; a client whose connection the router closes after a
    response is told so (``Connection: close``), and the connection ends."""
    body = hashlib.sha256(b"pieces").digest() * 1250  # 40,000 bytes

    def handler(request: h11.Request, _body: bytes) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Kept: yes\r\n" % len(body)
        if request.target == b"/hop":
            head += b"Connection: keep-alive\r\n"
        return [head + b"\r\n" + body[:100], body[100:20_000], body[20_000:]]

    backend = RawBackend(handler)
    port = routed(backend)
    got = exchange(
        port,
        b"GET /same HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )  # read until the router closes the connection: it must, after the third
    same = b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\nX-Kept: yes\r\n\r\n" + body
    hop = same  # its Connection line stops at the router
    last = b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\nX-Kept: yes\r\nConnection: close\r\n\r\n" + body
    assert got == same + hop + last
    assert [r.target for r, _ in backend.seen] == [b"/same", b"/hop", b"/last"]
    backend.stop()
