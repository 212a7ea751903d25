"""`[router] workers = N`: N router processes on the same listeners (SO_REUSEPORT), one parent.

One asyncio process forwards on one core. With N workers the kernel spreads new client
connections over N processes that each listen on every route's address with SO_REUSEPORT; the
parent listens on no address: it serves the control socket the agent and the deployer already
use (`router/control.py`, same protocol) and fans every change out to each worker over a private
socket of the worker's own (`run/rwK.sock`, mode 0600).

- A change is answered when every worker has applied it: after `set_pool` returns, no worker
  sends a new request to a removed backend (a worker that cannot be told is killed, and waited
  for, before the reply; it starts again with the new pools). `drain` answers when every worker
  has drained (the requests cut are summed).
- Counters and histograms are summed over the workers (`fanout.merge_stats`); a dead worker's
  last counters are kept, so totals never go backwards.
- A worker that dies is started again by the parent, given all routes and pools in one `load`
  before it listens; the others keep the listeners open meanwhile. Workers stop when the parent
  goes (they watch their parent pid); the parent stops them when it is told to stop.

Connections waiting in a dying worker's accept queue are reset by the kernel (SO_REUSEPORT gives
each socket its own queue); a client retries them as it would any reset connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from herdsman.router.fanout import Book, merge_stats, prune, retire
from herdsman.router.wire import LINE_LIMIT

START_TIMEOUT = 20.0  # seconds for a worker to answer on its socket (a loaded 2-core machine)
TELL_TIMEOUT = 10.0  # seconds for a worker to apply a change (it takes milliseconds); then it is killed


def free(address: str) -> None:
    """Refuse an address someone else listens on. SO_REUSEPORT would let the workers share it
    with any process of the same user that set it too (another project's router workers): a
    bind without it fails if anything listens there, as a single router's own bind would."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))  # OSError (address in use) goes back to the caller


class WorkerGone(Exception):
    """A worker did not answer: it is dead, or dying."""


class Worker:
    def __init__(self, index: int, socket_path: Path) -> None:
        self.index = index
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False  # given the book and listening
        self.last: dict[str, Any] = {}  # its last stats answer
        self.started = 0.0  # monotonic time of its last start
        self.backoff = 0.1  # seconds before a restart, doubled while restarts come quickly

    async def call(self, request: dict[str, Any], timeout: float = TELL_TIMEOUT) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket_path), limit=LINE_LIMIT), 5
            )
        except (OSError, TimeoutError) as exc:
            raise WorkerGone(f"worker {self.index}: {exc}") from exc
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, TimeoutError) as exc:
            raise WorkerGone(f"worker {self.index}: {type(exc).__name__} {exc}") from exc
        finally:
            writer.close()
        if not line:
            raise WorkerGone(f"worker {self.index} closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply


class WorkerSet:
    """The control plane of the workers: `control.Plane` for `ControlServer`."""

    def __init__(self, count: int, socket_path: Path) -> None:
        self.book = Book()
        self.workers = [Worker(i, socket_path.with_name(f"rw{i}.sock")) for i in range(count)]
        self.lock = asyncio.Lock()  # changes and (re)starts, one at a time: each worker sees them in order
        self.departed: dict[str, Any] = {}  # dead workers' last counters
        self.closing = False
        self.watchers: list[asyncio.Task[None]] = []
        self.restarts = 0

    # lifecycle ----------------------------------------------------------------------------------
    async def load(self, state: dict[str, Any]) -> None:
        """The state file at start (or a `load`): the book, then every worker started or told."""
        async with self.lock:
            self.book.restore(state)
            if not self.watchers:
                await asyncio.gather(*(self._start(w) for w in self.workers))
                self.watchers = [asyncio.get_running_loop().create_task(self._watch(w)) for w in self.workers]
            else:
                await self._fan({"op": "load", "state": self.book.state()})

    async def _start(self, worker: Worker) -> None:
        worker.socket_path.unlink(missing_ok=True)
        worker.started = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herdsman.router",
            "--worker",
            "--control",
            str(worker.socket_path),
            "--parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and worker.process.returncode is None:
            if worker.socket_path.exists():
                with contextlib.suppress(WorkerGone):
                    reply = await worker.call({"op": "load", "state": self.book.state()})
                    if not reply.get("ok"):  # a listener it could not open: it serves the others
                        print(
                            f"router worker {worker.index}: {reply.get('error')}", file=sys.stderr, flush=True
                        )
                    worker.ready = True
                    return
            await asyncio.sleep(0.05)
        await self._kill(worker)  # the watcher starts it again

    async def _watch(self, worker: Worker) -> None:
        """Start ``worker`` again whenever it exits, until the router stops."""
        while not self.closing:
            process = worker.process
            if process is None:
                return
            code = await process.wait()
            worker.ready = False
            if self.closing:
                return
            print(
                f"router worker {worker.index} (pid {process.pid}) exited {code}: starting it again",
                file=sys.stderr,
                flush=True,
            )
            self.departed = prune(retire(self.departed, worker.last), self.book.pools)
            worker.last = {}
            self.restarts += 1
            # a worker that keeps failing soon after its start is not restarted in a busy loop
            quick = time.monotonic() - worker.started < 10
            worker.backoff = min(5.0, worker.backoff * 2) if quick else 0.2
            await asyncio.sleep(worker.backoff)
            async with self.lock:
                if not self.closing:
                    try:
                        await self._start(worker)
                    except Exception as exc:  # said, and tried again (its old process has ended)
                        print(
                            f"router worker {worker.index} could not start: {exc!r}",
                            file=sys.stderr,
                            flush=True,
                        )

    async def _kill(self, worker: Worker) -> None:
        """A worker that cannot be told is ended before anyone is told a change is done."""
        worker.ready = False
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()

    async def close(self) -> None:
        self.closing = True
        for watcher in self.watchers:
            watcher.cancel()
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), 10)
        except TimeoutError:
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
        for worker in self.workers:
            worker.socket_path.unlink(missing_ok=True)

    # fan-out ------------------------------------------------------------------------------------
    async def _fan(self, request: dict[str, Any], timeout: float = TELL_TIMEOUT) -> list[dict[str, Any]]:
        """``request`` to every ready worker; a worker that does not answer is killed (and waited
        for) before this returns. The first refusal is raised as the router's own would be."""
        ready = [w for w in self.workers if w.ready]
        replies = await asyncio.gather(*(w.call(request, timeout) for w in ready), return_exceptions=True)
        answered: list[dict[str, Any]] = []
        failure: BaseException | None = None
        for worker, reply in zip(ready, replies, strict=True):  # every gone worker killed first
            if isinstance(reply, WorkerGone):
                await self._kill(worker)
            elif isinstance(reply, BaseException):
                failure = failure or reply
            elif not reply.get("ok"):
                failure = failure or ValueError(str(reply.get("error", "refused")))
            else:
                answered.append(reply)
        if failure is not None:
            raise failure
        return answered

    def has_route(self, name: str) -> bool:
        return name in self.book.routes

    async def set_routes(self, routes: list[dict[str, Any]], prefix: str) -> None:
        async with self.lock:
            held = {str(r["listen"]) for r in self.book.routes.values()}
            for address in sorted({str(r["listen"]) for r in routes} - held):
                free(address)
            self.book.set_routes(routes, prefix)
            await self._fan({"op": "set_routes", "routes": routes, "prefix": prefix})

    async def set_pool(self, route: str, backends: list[dict[str, Any]]) -> None:
        async with self.lock:
            self.book.set_pool(route, backends)
            await self._fan({"op": "set_pool", "route": route, "backends": backends})

    async def drain(self, route: str, addresses: list[str], timeout: float, hung: bool) -> dict[str, int]:
        async with self.lock:  # the book first: a worker (re)started from now on never uses them
            self.book.drain(route, addresses)
        request = {"op": "drain", "route": route, "addresses": addresses, "timeout": timeout, "hung": hung}
        replies = await self._fan(request, timeout + 10)
        return {"cut": sum(int(r.get("cut", 0)) for r in replies)}

    async def stats(self) -> dict[str, Any]:
        ready = [w for w in self.workers if w.ready]
        # a worker that does not answer in time counts with its last answer (callers wait 5 s at most)
        replies = await asyncio.gather(*(w.call({"op": "stats"}, 2) for w in ready), return_exceptions=True)
        for worker, reply in zip(ready, replies, strict=True):
            if isinstance(reply, dict) and reply.get("ok"):
                worker.last = dict(reply["stats"])
        parts = [w.last for w in self.workers if w.last]
        return merge_stats(parts, self.departed, self.book.routes)

    def snapshot(self) -> dict[str, Any]:
        return self.book.state()

    def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "workers": [w.process.pid if w.process and w.ready else None for w in self.workers],
            "restarts": self.restarts,
        }
