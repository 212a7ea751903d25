"""Instructions per request of the embedded router's request path, counted by callgrind.

Wall-clock throughput on a shared 2-core VM moves by 2x within minutes; the number of instructions
the CPU executes for one request does not depend on the load. This runs the router's real
protocol objects (`ClientConnection`, `Exchange`, `UpstreamConnection`, a `Router` with one route
and one backend) over fake transports: no sockets, no event loop, only the Python work per request
(the work that limits the router, BENCHMARKS.md). Each case is run under
``valgrind --tool=callgrind`` twice, with a small and a large number of requests; the difference
of the two totals divided by the difference of the counts is the cost of one request, start-up and
warm-up cancelled out.

Cases: the wrk request and nginx's small response; the same with a 64 KiB body (read from the
backend in 64 KiB pieces, as a socket gives it); a new client connection per request
(``Connection: close``); a POST with a 1 KiB body.

Then the whole router process: ``python -m herdsman.router`` (uvloop, real sockets) under callgrind
in front of nginx, its counters zeroed after a warm-up (``callgrind_control -z``), wrk sending
small requests for ``--seconds`` over 10 connections (keep-alive, then a new connection per
request), the counters dumped; divided by the requests the router's own stats counted meanwhile.
This includes the event loop and the router's watchdog, not the kernel's work in its syscalls.

    .venv/bin/python bench/router_instructions.py [--code DIR] [--seconds 10] [--no-process]

``--code DIR`` counts another version of herdsman (a `git archive` of it in DIR) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import router_argv

SMALL_BODY = b"hello from nginx\n"
BIG_BODY = b"x" * 65536
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nConnection: close\r\n\r\n"
POST_REQUEST = (
    b"POST /api HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1024\r\n\r\n" + b"y" * 1024
)
CASES = {
    "GET, small response, keep-alive": (REQUEST, SMALL_BODY, True),
    "GET, 64 KiB response, keep-alive": (REQUEST, BIG_BODY, True),
    "GET, small response, new connection": (CLOSE_REQUEST, SMALL_BODY, False),
    "POST 1 KiB, small response, keep-alive": (POST_REQUEST, SMALL_BODY, True),
}
COUNTS = (100, 1100)


def response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 07:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%b"
        % (len(body), body)
    )


class Transport(asyncio.Transport):
    """Counts what is written; never closing, never paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: object) -> None:
        self.written += sum(map(len, list_of_data))  # type: ignore[call-overload]

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def run(case: str, count: int) -> None:
    """``count`` requests of ``case`` through the router's protocol objects (run under callgrind)."""
    from herdsman.router.inbound import ClientConnection
    from herdsman.router.proxy import Backend, Route, Router
    from herdsman.router.upstream import UpstreamConnection

    request, body, keep = CASES[case]
    answer = response(body)
    pieces = [answer[i : i + 65536] for i in range(0, len(answer), 65536)]
    router = Router()
    route = router.routes["b/web"] = Route("b/web", "127.0.0.1:18081")
    backend = Backend("nginx", "127.0.0.1", 18082)
    route.backends = [backend]
    router._index_listeners()
    upstream = UpstreamConnection(backend)
    upstream_transport = Transport()
    upstream.connection_made(upstream_transport)
    backend.idle.append(upstream)
    client = ClientConnection(router, "127.0.0.1:18081")
    client_transport = Transport()
    client.connection_made(client_transport)
    for _ in range(count):
        if not keep:
            client = ClientConnection(router, "127.0.0.1:18081")
            client_transport = Transport()
            client.connection_made(client_transport)
        client.data_received(request)
        for piece in pieces:
            upstream.data_received(piece)
        if not keep:
            client.connection_lost(None)
    assert backend.requests == count and backend.idle == [upstream], "every request answered, reused"
    assert client_transport.written >= len(answer) - 30, "the response reached the client"


def instructions(case: str, count: int, code: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="herd-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--inner",
                case,
                str(count),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        assert totals is not None, "callgrind wrote its totals"
        return int(totals.group(1))


def per_request(case: str, code: Path | None) -> float:
    low, high = (instructions(case, count, code) for count in COUNTS)
    return (high - low) / (COUNTS[1] - COUNTS[0])


def process_per_request(code: Path | None, close: bool, seconds: int) -> float:
    """Instructions of the router process per request it forwarded, under wrk (see the docstring)."""
    from router import NGINX_CONF, free_port, wait_port  # bench/router.py

    from herdsman.errors import HerdError
    from herdsman.router.client import RouterClient

    with tempfile.TemporaryDirectory(prefix="herd-callgrind-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        (tmp / "www").mkdir()
        nginx_port, port = free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
        env = dict(os.environ, PYTHONPATH=str(code)) if code is not None else None
        out = tmp / "callgrind.out"
        processes = [subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")], stderr=subprocess.DEVNULL)]
        control = tmp / "router.sock"
        argv = router_argv(control, tmp / "s.json")
        router = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            env=env,
            cwd=tmp,  # not this checkout, which `python -m` would put before PYTHONPATH on sys.path
            stderr=subprocess.DEVNULL,
        )
        processes.append(router)
        try:
            deadline = time.monotonic() + 300  # python under valgrind starts slowly on a loaded machine
            client = RouterClient(control)
            while time.monotonic() < deadline:  # the socket file comes before the router listens on it
                with contextlib.suppress(HerdError):
                    client.call_now({"op": "ping"})
                    break
                time.sleep(0.2)
            client.call_now(
                {"op": "set_routes", "routes": [{"name": "b/web", "listen": f"127.0.0.1:{port}"}]}
            )
            backends = [{"id": "nginx", "address": f"127.0.0.1:{nginx_port}"}]
            client.call_now({"op": "set_pool", "route": "b/web", "backends": backends})
            wait_port(port)
            wrk = ["wrk", "-t1", "-c10", f"http://127.0.0.1:{port}/"] + (
                ["-H", "Connection: close"] if close else []
            )

            def served() -> int:
                stats = client.call_now({"op": "stats"})["stats"]
                return int(stats["b/web"]["backends"][0]["requests"])

            subprocess.run([*wrk, "-d3s"], check=True, capture_output=True)  # warm up
            before = served()
            subprocess.run(["callgrind_control", "-z", str(router.pid)], check=True, capture_output=True)
            subprocess.run([*wrk, f"-d{seconds}s"], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(router.pid)], check=True, capture_output=True)
            requests = served() - before
            dumps = sorted(glob.glob(f"{out}.*"))
            totals = re.search(r"^(?:summary|totals): (\d+)", Path(dumps[-1]).read_text(), re.MULTILINE)
            assert totals is not None and requests > 0, "callgrind dumped its counts; requests were served"
            return int(totals.group(1)) / requests
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--inner":
        run(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, help="also count this tree of herdsman (e.g. a git archive)")
    parser.add_argument("--seconds", type=int, default=10, help="of wrk against the router under callgrind")
    parser.add_argument(
        "--no-process", action="store_true", help="only the request path over fake transports"
    )
    args = parser.parse_args()
    versions: dict[str, Path | None] = {"this tree": None}
    if args.code is not None:
        versions = {str(args.code): args.code.resolve(), **versions}
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; callgrind, {COUNTS} requests")
    print("| request | " + " | ".join(versions) + " |")
    print("| --- |" + " ---: |" * len(versions))
    for case in CASES:
        counts = [per_request(case, code) for code in versions.values()]
        print(f"| {case} | " + " | ".join(f"{n:,.0f}" for n in counts) + " |", flush=True)
    if args.no_process:
        return
    print(f"\nthe router process under wrk -t1 -c10 -d{args.seconds}s, nginx's small response:")
    print("| requests | " + " | ".join(versions) + " |")
    print("| --- |" + " ---: |" * len(versions))
    for label, close in (("keep-alive", False), ("new connection per request", True)):
        counts = [process_per_request(code, close, args.seconds) for code in versions.values()]
        print(f"| {label} | " + " | ".join(f"{n:,.0f}" for n in counts) + " |", flush=True)


if __name__ == "__main__":
    main()
