"""Talking to the router process: start it when it is not running, set routes, pools and drains.

`RouterPools` is what the rollout executor uses (`deploy.execute.Pools`); `ensure_router_pools`
starts the router of a project if needed (its own process, in its own session: it outlives the
agent and the CLI) and gives it the routes of the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from herdsman.errors import DeployError
from herdsman.router.wire import LINE_LIMIT
from herdsman.spec import Project, Service, herd_home


class RouterClient:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def call(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket_path), limit=LINE_LIMIT), 5
            )
        except (OSError, TimeoutError) as exc:
            raise DeployError(f"the router is not answering on {self.socket_path}: {exc}", delay=1.0) from exc
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        reply: dict[str, Any] = json.loads(line or b"{}")
        if not reply.get("ok"):
            raise DeployError(f"the router refused {request.get('op')}: {reply.get('error', 'no reply')}")
        return reply

    def call_now(self, request: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(self.call(request))


class RouterPools:
    """The executor's view of the router."""

    def __init__(self, client: RouterClient) -> None:
        self.client = client

    async def set_routes(self, env: str, routes: list[dict[str, Any]]) -> None:
        await self.client.call({"op": "set_routes", "prefix": f"{env}/", "routes": routes})

    async def set_pool(
        self, route: str, backends: list[tuple[str, str, int]], *, interim: bool = False
    ) -> None:
        payload = [{"id": i, "address": a, "weight": w} for i, a, w in backends]
        request: dict[str, Any] = {"op": "set_pool", "route": route, "backends": payload}
        if interim:
            request["interim"] = True  # the router may write it to its state file with the next
        await self.client.call(request)

    async def drain(self, route: str, addresses: list[str], timeout: float, *, hung: bool = False) -> None:
        request = {"op": "drain", "route": route, "addresses": addresses, "timeout": timeout, "hung": hung}
        await self.client.call(request, timeout + 10)

    async def stats(self) -> dict[str, Any]:
        """Per route: its backends with their in-flight and cumulative request/error counters."""
        reply = await self.client.call({"op": "stats"}, 5)
        return dict(reply.get("stats") or {})


def router_paths(home: Path) -> tuple[Path, Path, Path]:
    run = home / "run"
    return run / "router.sock", run / "router.json", home / "logs" / "router.log"


def ensure_router(home: Path, workers: int = 1) -> RouterClient:
    """The router of ``home``, started (detached) if it is not running, with ``workers`` processes
    on its listeners (a running router keeps the count it was started with)."""
    socket_path, state_path, log = router_paths(home)
    client = RouterClient(socket_path)
    try:
        client.call_now({"op": "ping"})
        return client
    except DeployError:
        pass
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "herdsman.router",
        "--control",
        str(socket_path),
        "--state",
        str(state_path),
        "--workers",
        str(workers),
    ]
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + 30  # a loaded machine, and workers that start before the parent answers
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise DeployError(f"the router stopped at start (exit {child.returncode})", hint=f"see {log}")
        if socket_path.exists():
            try:
                client.call_now({"op": "ping"})
                return client
            except DeployError:
                pass
        time.sleep(0.05)
    raise DeployError("the router did not come up within 30s", hint=f"see {log}")


def stack_routes(project: Project, env: str) -> list[dict[str, Any]]:
    """The routes of ``env`` as the current herd.toml declares them."""
    return routes_of(env, project.stack.service)


def routes_of(env: str, services: Mapping[str, Service]) -> list[dict[str, Any]]:
    """The router's routes for ``services`` (a release's, or a herd.toml's) in ``env``."""
    routes = []
    for name, service in sorted(services.items()):
        if service.route is not None:
            routes.append(
                {
                    "name": f"{env}/{name}",
                    "listen": service.route.listen,
                    "host": service.route.host,
                    "drain_timeout": service.route.drain_timeout,
                    "first_byte_timeout": service.route.first_byte_timeout,
                }
            )
    return routes


def ensure_router_pools(
    project: Project, env: str, routes: list[dict[str, Any]] | None = None
) -> RouterPools:
    """The router's pools, with ``env``'s routes set: ``routes``, else herd.toml's."""
    client = ensure_router(herd_home(project), project.stack.router.worker_count())
    wanted = stack_routes(project, env) if routes is None else routes
    client.call_now({"op": "set_routes", "prefix": f"{env}/", "routes": wanted})
    return RouterPools(client)


ensure_pools = ensure_router_pools  # the embedded engine's entry in `router.engines`


def release_routes(home: Path, env: str) -> bool:
    """`herd down`: ``env``'s routes go; the router stops when no route is left. True if it stopped."""
    if router_pid(home) is None:
        return False
    client = RouterClient(router_paths(home)[0])
    client.call_now({"op": "set_routes", "prefix": f"{env}/", "routes": []})
    if client.call_now({"op": "stats"})["stats"]:
        return False
    stop_router(home)
    return True


def router_pid(home: Path) -> int | None:
    try:
        return int(RouterClient(router_paths(home)[0]).call_now({"op": "ping"})["pid"])
    except DeployError:
        return None


def stop_router(home: Path) -> None:
    pid = router_pid(home)
    if pid is not None:
        os.kill(pid, 15)
