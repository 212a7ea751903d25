"""Health probes: is this instance ready to take traffic, is it still alive?

One probe is one attempt (http, tcp or command) bounded by the check's timeout; the deploy and
heal logic count successes and failures (`HealthTracker`) to admit or eject an instance. Probes use
plain asyncio sockets rather than an HTTP client library: a probe is one tiny request, made often,
and must never hang past its timeout or keep a connection open.

A command check runs *inside* the instance, as a Docker HEALTHCHECK or a Kubernetes exec probe
does: the caller passes the driver's `exec` for that instance (``run_inside``). Run on the host it
would see neither the instance's files nor its environment, so a worker could not check its own
state. There is no host fallback: without ``run_inside`` a command check fails, saying why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from herdsman.errors import HerdError
from herdsman.spec import HealthCheck

COMMAND_SLACK = 2.0  # past a command's own timeout (its runner kills it), the probe gives up anyway


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "200", "connection refused", "exit 1: ...", "timed out after 1s"
    seconds: float

    @property
    def shown(self) -> str:
        """As `herd ps` and the dashboard show it: "healthy" or "failing (why)"."""
        return "healthy" if self.ok else f"failing ({self.detail})"


class Ran(Protocol):
    """What a driver's `exec` returns (drivers.base.ExecResult; health does not import drivers)."""

    @property
    def exit_code(self) -> int | None: ...
    @property
    def output(self) -> str: ...
    @property
    def timed_out(self) -> bool: ...


RunInside = Callable[[Sequence[str], float], Awaitable[Ran]]  # (argv, timeout) -> result


async def probe(
    check: HealthCheck, host: str, port: int | None, run_inside: RunInside | None = None
) -> ProbeResult:
    """Run one probe of ``check`` against an instance listening on host:port; a command check
    runs through ``run_inside`` (the driver's `exec` bound to the instance)."""
    started = time.monotonic()
    limit = check.timeout + COMMAND_SLACK if check.type == "command" else check.timeout
    try:
        async with asyncio.timeout(limit):
            if check.type == "command":
                ok, detail = await _command(check, run_inside)
            elif port is None:
                ok, detail = False, "the instance has no port to probe"
            elif check.type == "tcp":
                ok, detail = await _tcp(host, port)
            else:
                ok, detail = await _http(check, host, port)
    except TimeoutError:
        ok, detail = False, f"timed out after {check.timeout:g}s"
    except OSError as exc:
        ok, detail = False, exc.strerror or type(exc).__name__
    except HerdError as exc:  # the driver could not run the command (the instance stopped...)
        ok, detail = False, exc.message
    return ProbeResult(ok, detail, time.monotonic() - started)


async def _tcp(host: str, port: int) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    await writer.wait_closed()
    return True, "connected"


async def _http(check: HealthCheck, host: str, port: int) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            f"GET {check.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: herdsman-health\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "no HTTP response" if not line else f"bad status line {line[:40]!r}"
    status = int(parts[1])
    return status == check.status, f"HTTP {status}"


async def _command(check: HealthCheck, run_inside: RunInside | None) -> tuple[bool, str]:
    if run_inside is None:
        return False, "no way to run the command inside the instance"
    ran = await run_inside(check.command, check.timeout)
    if ran.timed_out:
        return False, f"timed out after {check.timeout:g}s"
    text = ran.output.strip().splitlines()
    tail = f": {text[-1][:200]}" if text else ""
    if ran.exit_code is None:
        return False, f"could not run{tail}"
    return ran.exit_code == 0, f"exit {ran.exit_code}{tail}"


@dataclass
class HealthTracker:
    """Counts consecutive results: ``successes`` in a row admit, ``failures`` in a row eject."""

    successes_needed: int
    failures_needed: int
    healthy: bool = False
    streak_ok: int = 0
    streak_failed: int = 0
    last: ProbeResult | None = None

    @classmethod
    def for_check(cls, check: HealthCheck) -> HealthTracker:
        return cls(check.successes, check.failures)

    def record(self, result: ProbeResult) -> bool | None:
        """Record a result; return True when the instance just became healthy, False when it just
        became unhealthy, None when nothing changed."""
        self.last = result
        if result.ok:
            self.streak_ok += 1
            self.streak_failed = 0
            if not self.healthy and self.streak_ok >= self.successes_needed:
                self.healthy = True
                return True
        else:
            self.streak_failed += 1
            self.streak_ok = 0
            if self.healthy and self.streak_failed >= self.failures_needed:
                self.healthy = False
                return False
        return None
