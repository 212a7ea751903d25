"""Health probes against real sockets and processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from herdsman.drivers.base import ExecResult
from herdsman.drivers.bounded import run_bounded
from herdsman.errors import DriverError
from herdsman.health import HealthTracker, ProbeResult, RunInside, probe
from herdsman.spec.models import HealthCheck


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            threading.Event().wait(2)
        status = 200 if self.path in ("/healthz", "/slow") else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(check: HealthCheck, port: int | None, run_inside: RunInside | None = None) -> ProbeResult:
    return asyncio.run(probe(check, "127.0.0.1", port, run_inside))


async def on_host(argv: Sequence[str], timeout: float) -> ExecResult:
    """A stand-in for a driver's `exec` (the probe's own logic is what is tested here)."""
    return await run_bounded(argv, timeout=timeout)


def test_http_probe(server: int) -> None:
    assert run(HealthCheck(path="/healthz"), server).ok
    failed = run(HealthCheck(path="/broken"), server)
    assert not failed.ok and failed.detail == "HTTP 503"
    assert run(HealthCheck(path="/broken", status=503), server).ok


def test_http_probe_times_out(server: int) -> None:
    result = run(HealthCheck(path="/slow", timeout="200ms", interval="1s"), server)  # type: ignore[arg-type]
    assert not result.ok and "timed out" in result.detail


def test_refused_connection_is_a_failure_not_an_exception() -> None:
    result = run(HealthCheck(), _free_port())
    assert not result.ok and result.detail


def test_tcp_probe(server: int) -> None:
    assert run(HealthCheck(type="tcp"), server).ok
    assert not run(HealthCheck(type="tcp"), _free_port()).ok


def test_command_probe() -> None:
    assert run(HealthCheck(type="command", command=("true",)), None, on_host).ok  # type: ignore[arg-type]
    failed = run(HealthCheck(type="command", command=("sh", "-c", "echo sick; exit 3")), None, on_host)  # type: ignore[arg-type]
    assert not failed.ok and failed.detail == "exit 3: sick"
    hung = run(HealthCheck(type="command", command=("sleep", "5"), timeout="200ms"), None, on_host)  # type: ignore[arg-type]
    assert not hung.ok and "timed out" in hung.detail
    missing = run(HealthCheck(type="command", command=("no-such-command-here",)), None, on_host)  # type: ignore[arg-type]
    assert not missing.ok and "cannot run 'no-such-command-here'" in missing.detail


def test_a_command_check_never_falls_back_to_the_host() -> None:
    """Without a way into the instance a command check fails (it would check the wrong machine)."""
    result = run(HealthCheck(type="command", command=("true",)), None)  # type: ignore[arg-type]
    assert not result.ok and "inside the instance" in result.detail

    async def gone(argv: Sequence[str], timeout: float) -> ExecResult:
        raise DriverError("instance web-1-a1 is not running")

    stopped = run(HealthCheck(type="command", command=("true",)), None, gone)  # type: ignore[arg-type]
    assert not stopped.ok and stopped.detail == "instance web-1-a1 is not running"


def test_tracker_admits_after_successes_and_ejects_after_failures() -> None:
    tracker = HealthTracker(successes_needed=2, failures_needed=3)
    ok, bad = ProbeResult(True, "", 0), ProbeResult(False, "", 0)
    assert tracker.record(ok) is None
    assert tracker.record(ok) is True and tracker.healthy
    assert tracker.record(bad) is None and tracker.record(bad) is None
    assert tracker.record(ok) is None  # a success resets the failure streak
    assert [tracker.record(bad) for _ in range(3)] == [None, None, False]
    assert not tracker.healthy
