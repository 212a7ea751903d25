"""HAProxy run and driven by herdsman: the `haproxy` engine's `Pools` (see `deploy.execute.Pools`).

HAProxy runs in master-worker mode, daemonised (`-W -D`: its own session, pid file under
`.herd/run/`), so the CLI and the agent may die while traffic flows. What herdsman wants of it —
the routes of every environment and their pools — is kept in `.herd/run/haproxy.json`, from which
the config file is written at every start and reload (`config.haproxy_config`). A pool change
never reloads: it is a few runtime commands (`commands.pool_commands`) over the stats socket. Only
a change of routes reloads (SIGUSR2 to the master: the new worker takes the listening sockets
over, the old one finishes its requests), and the config is checked (`haproxy -c`) before.
A drain sets the servers to `drain`, waits until none has a request in flight (`scur` + `qcur`) or
the timeout, cuts what is left, then deletes them (maint first, as HAProxy 2.6 requires).
Known gap: requests in flight in an old worker during a reload are not seen by a drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from herdsman.errors import DeployError
from herdsman.router.client import stack_routes
from herdsman.router.haproxy.commands import drain_commands, pool_commands, remove_commands, wanted_servers
from herdsman.router.haproxy.config import Paths, backend_name, haproxy_config, server_name
from herdsman.router.haproxy.runtime import Runtime
from herdsman.router.haproxy.stats import router_stats, rows, servers_by_backend
from herdsman.spec import Project, herd_home

START_TIMEOUT = 10.0
DELETE_PATIENCE = 5.0  # seconds to wait for HAProxy to let go of a removed server's last connection


class HaproxyPools:
    """The executor's and the agent's view of a HAProxy owned by the project in ``home``."""

    def __init__(self, home: Path, binary: str | None = None) -> None:
        run = home / "run"
        self.run_dir = run
        self.config_path = run / "haproxy.cfg"
        self.state_path = run / "haproxy.json"
        self.lock_path = run / "haproxy.lock"
        self.paths = Paths(socket=str(run / "haproxy.sock"), pidfile=str(run / "haproxy.pid"))
        self.log = home / "logs" / "haproxy.log"
        self.binary = binary or shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.runtime = Runtime(Path(self.paths.socket))

    # what herdsman wants of HAProxy -------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("routes", [])
        state.setdefault("pools", {})
        return state

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The wanted state, under an flock (an agent and a CLI may both change it)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # the process ----------------------------------------------------------------------------------
    def write_config(self, state: dict[str, Any]) -> None:
        text = haproxy_config(state["routes"], state["pools"], self.paths)
        tmp = self.config_path.with_name(f".{self.config_path.name}.tmp")
        tmp.write_text(text)
        try:
            checked = subprocess.run(
                [self.binary, "-c", "-q", "-f", str(tmp)], capture_output=True, text=True
            )
        except OSError as exc:
            raise DeployError(
                f'[router] engine = "haproxy" but HAProxy cannot be run: {exc}',
                hint='install it (apt-get install haproxy), or use engine = "embedded" in herd.toml',
            ) from exc
        if checked.returncode != 0:
            raise DeployError(
                "HAProxy refused the configuration herdsman wrote",
                hint=(checked.stderr or checked.stdout).strip()[-800:] + f" (see {tmp})",
            )
        os.replace(tmp, self.config_path)

    def master_pid(self) -> int | None:
        try:
            pid = int(Path(self.paths.pidfile).read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    async def ensure_running(self, state: dict[str, Any]) -> None:
        if self.master_pid() is not None and await self.runtime.worker_pid() is not None:
            return
        self.write_config(state)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        Path(self.paths.socket).unlink(missing_ok=True)
        argv = [self.binary, "-W", "-D", "-f", str(self.config_path), "-p", self.paths.pidfile]
        with self.log.open("ab") as out:
            started = subprocess.run(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        if started.returncode != 0:
            raise DeployError(f"HAProxy stopped at start (exit {started.returncode})", hint=f"see {self.log}")
        await self._wait_worker(None)

    async def _wait_worker(self, old: int | None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = await self.runtime.worker_pid()
            if pid is not None and pid != old:
                return
            await asyncio.sleep(0.05)
        raise DeployError(f"HAProxy did not answer within {START_TIMEOUT:g}s", hint=f"see {self.log}")

    async def reload(self, state: dict[str, Any]) -> None:
        """New routes: a new worker takes the listeners over; the old one finishes its requests."""
        master = self.master_pid()
        if master is None:
            await self.ensure_running(state)
            return
        self.write_config(state)
        old = await self.runtime.worker_pid()
        os.kill(master, signal.SIGUSR2)
        await self._wait_worker(old)

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)

    # deploy.execute.Pools ------------------------------------------------------------------------
    async def set_routes(self, env: str, routes: list[dict[str, Any]]) -> None:
        with self.locked() as state:
            kept = [r for r in state["routes"] if not str(r["name"]).startswith(f"{env}/")]
            new_routes = sorted(kept + [dict(r) for r in routes], key=lambda r: str(r["name"]))
            names = {str(r["name"]) for r in new_routes}
            changed = new_routes != state["routes"]
            state["routes"] = new_routes
            state["pools"] = {k: v for k, v in state["pools"].items() if k in names}
            self.save(state)
            if changed:
                await self.reload(state)
            else:
                await self.ensure_running(state)

    async def set_pool(
        self, route: str, backends: list[tuple[str, str, int]], *, interim: bool = False
    ) -> None:
        with self.locked() as state:
            if route not in {str(r["name"]) for r in state["routes"]}:
                raise DeployError(f"HAProxy has no route {route!r}", hint="set the routes first")
            await self.ensure_running(state)
            backend = backend_name(route)
            current = servers_by_backend(rows(await self.runtime.show_stat())).get(backend, {})
            for command in pool_commands(backend, current, wanted_servers(backends)):
                await self.runtime.run(command)
            state["pools"][route] = [{"id": i, "address": a, "weight": w} for i, a, w in backends]
            self.save(state)

    async def drain(self, route: str, addresses: list[str], timeout: float, *, hung: bool = False) -> None:
        """``hung`` needs nothing more here: HAProxy's server timeout is the route's first-byte
        timeout, past which an idempotent request is retried elsewhere (`retry-on response-timeout`)."""
        backend = backend_name(route)
        wanted = set(addresses)
        table = rows(await self.runtime.show_stat())
        names = [r["svname"] for r in table if r["pxname"] == backend and r.get("addr") in wanted]
        current = servers_by_backend(table).get(backend, {})
        for command in drain_commands(backend, [n for n in names if current[n].state == "ready"]):
            await self.runtime.run(command)
        deadline = time.monotonic() + timeout
        busy = names
        while busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            busy = await self._busy(backend, names)
        for name in names:
            await self._remove(backend, name, cut=name in busy)
        with self.locked() as state:
            pool = state["pools"].get(route, [])
            state["pools"][route] = [b for b in pool if b["address"] not in wanted]
            self.save(state)

    async def _busy(self, backend: str, names: list[str]) -> list[str]:
        table = rows(await self.runtime.show_stat())
        counts = {
            r["svname"]: int(r.get("scur") or 0) + int(r.get("qcur") or 0)
            for r in table
            if r["pxname"] == backend
        }
        return [n for n in names if counts.get(n, 0) > 0]

    async def _remove(self, backend: str, name: str, *, cut: bool) -> None:
        deadline = time.monotonic() + DELETE_PATIENCE
        commands = remove_commands(backend, [name], cut=cut)
        for command in commands[:-1]:
            await self.runtime.run(command)
        while True:  # `del server` waits for the server's last (idle) connection to close
            reply = (await self.runtime.ask(commands[-1])).strip()
            if reply == "Server deleted." or "No such server" in reply or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    async def stats(self) -> dict[str, Any]:
        """Per route: its pool's servers with in-flight and cumulative request/error counters."""
        state = self.load()
        instances = {
            server_name(str(b["id"]), str(b["address"])): str(b["id"])
            for pool in state["pools"].values()
            for b in pool
        }
        return router_stats(rows(await self.runtime.show_stat()), state["routes"], instances)


def ensure_pools(project: Project, env: str, routes: list[dict[str, Any]] | None = None) -> HaproxyPools:
    pools = HaproxyPools(herd_home(project))
    asyncio.run(pools.set_routes(env, stack_routes(project, env) if routes is None else routes))
    return pools


def release_routes(home: Path, env: str) -> bool:
    """`herd down`: ``env``'s routes go; HAProxy stops when no route is left. True if it stopped."""
    pools = HaproxyPools(home)
    if pools.master_pid() is None:
        return False
    asyncio.run(pools.set_routes(env, []))
    if pools.load()["routes"]:
        return False
    pools.stop()
    return True
