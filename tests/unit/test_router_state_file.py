"""When the router writes its state file (router/control.py): every change before it is answered,
but a burst's interim pool changes, which are written together at most every SAVE_EVERY."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from herdsman.router import control
from herdsman.router.control import ControlServer


class Plane:
    """Just enough of a router plane: pools kept as given, nothing served."""

    def __init__(self) -> None:
        self.pools: dict[str, list[dict[str, Any]]] = {}

    def has_route(self, name: str) -> bool:
        return True

    async def set_pool(self, route: str, backends: list[dict[str, Any]]) -> None:
        self.pools[route] = backends

    async def drain(self, route: str, addresses: list[str], timeout: float, hung: bool) -> dict[str, int]:
        self.pools[route] = [b for b in self.pools.get(route, []) if b["address"] not in addresses]
        return {"cut": 0}

    def snapshot(self) -> dict[str, Any]:
        return {"routes": [], "pools": dict(self.pools)}


def test_interim_changes_wait_for_the_next_write_and_a_drain_writes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "SAVE_EVERY", 3600.0)  # no interim change is written by time here
    state = tmp_path / "router.json"
    server = ControlServer(Plane(), tmp_path / "router.sock", state)  # type: ignore[arg-type]

    def on_file() -> list[str]:
        return [b["address"] for b in json.loads(state.read_text())["pools"].get("web", [])]

    def pool(*addresses: str, interim: bool = False) -> dict[str, Any]:
        backends = [{"id": a, "address": a, "weight": 1} for a in addresses]
        return {"op": "set_pool", "route": "web", "backends": backends, "interim": interim}

    async def scenario() -> None:
        assert (await server.handle(pool("a", interim=True)))["ok"]
        assert on_file() == ["a"], "the first write: the file was older than SAVE_EVERY"
        await server.handle(pool("a", "b", interim=True))
        await server.handle(pool("a", "b", "c", interim=True))
        assert on_file() == ["a"], "interim changes wait for the next write"
        await server.handle(pool("a", "b", "c", "d"))
        assert on_file() == ["a", "b", "c", "d"], "a plain change is written before its answer"
        await server.handle(pool("b", "c", interim=True))
        assert on_file() == ["a", "b", "c", "d"]
        await server.handle({"op": "drain", "route": "web", "addresses": ["a", "d"], "timeout": 1})
        assert on_file() == ["b", "c"], "a drain answers with the file holding every change before it"
        await server.handle(pool("c", interim=True))
        server.flush()  # as at SIGTERM
        assert on_file() == ["c"]

    asyncio.run(scenario())
