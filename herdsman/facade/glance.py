"""`herd ps` when an agent runs: its answer, read without loading the machinery that acts.

With an agent up, `herd ps` shows the agent's own listing and its last liveness check of each
instance: one GET. Everything else the full path loads (the pydantic models of herd.toml, httpx,
asyncio, the drivers and deploy code) was most of the command's time: at 1,000 instances about
0.5 s of start-up against 0.02 s of answer. So this module reads, from herd.toml, only `[stack]
environment` (plain TOML, no models), asks the agent with the standard library's http.client
(`client.get_json`) and reads the runtime notes from the state store; it falls back to
`views.instances` (the file validated, listed and probed here) when no agent answers, when the
file does not even say which environment is meant, or when an instance has no liveness result
from the agent (no check, not admitted yet). Commands that act always validate herd.toml whole.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdsman.agent.pidfile import agent_pid
from herdsman.client import get_json
from herdsman.errors import HerdError
from herdsman.spec.files import find_stack_file, home_for
from herdsman.state import StateStore


@dataclass(frozen=True)
class InstanceRow:
    id: str
    service: str
    release: int
    image: str
    state: str
    detail: str
    health: str  # healthy, failing (why), no check, "-" (not running), "?" (release unknown)
    started: float
    address: str
    node: str = ""  # the node it runs on (a multi-node driver), else ""
    evicted: str = ""  # why it must move to another node, else ""


@dataclass(frozen=True)
class Instances:
    """`herd ps`: the instances, and the runtime state that explains their count."""

    env: str
    rows: list[InstanceRow]
    scales: dict[str, tuple[int, str]] = field(default_factory=dict)  # service -> (count, fixed|auto)
    notes: dict[str, str] = field(default_factory=dict)  # service -> e.g. a crash loop's back-off
    health_by_agent: bool = False  # health as the agent last checked it, not probed now


def instances(file: Path | None, env: str | None = None, *, driver_name: str | None = None) -> Instances:
    """`herd ps` for the herd.toml at or above ``file``: from the agent's answer alone when it has a
    liveness result for every instance, else through `views.instances`."""
    stack_file = find_stack_file(file)
    home = home_for(stack_file)
    name = env or declared_environment(stack_file)
    rows = agent_rows(home, name) if name is not None else None
    if rows is not None and all(r.health for r in rows):
        state = StateStore(home / "state.db")
        try:
            return Instances(name or "", rows, state.scales(name or ""), state.notes(name or ""), bool(rows))
        finally:
            state.close()
    from herdsman.facade.views import instances as listed_here
    from herdsman.spec import load_project

    project = load_project(file)
    return listed_here(project, env, driver_name=driver_name, agent_listing=rows, asked=name is not None)


def declared_environment(stack_file: Path) -> str | None:
    """`[stack] environment` of herd.toml, read as plain TOML; None when the file cannot say (not
    readable, not TOML, not a name): the models then report what is wrong."""
    try:
        data = tomllib.loads(stack_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    stack = data.get("stack")
    if not isinstance(stack, dict):
        return None
    name = stack.get("environment", "production")
    return name if isinstance(name, str) and name else None


def agent_rows(home: Path, env: str) -> list[InstanceRow] | None:
    """The agent's listing with its last liveness results; None when no agent answers."""
    if agent_pid(home, env) is None:
        return None
    try:
        listed = get_json(home, env, "/v1/instances")
    except HerdError:  # not answering (starting, stopping): list and probe here instead
        return None
    return [_row(i) for i in listed]


def _row(i: dict[str, Any]) -> InstanceRow:
    return InstanceRow(
        str(i["id"]),
        str(i["service"]),
        int(i["release"]),
        str(i.get("image", "")),
        str(i["state"]),
        str(i.get("detail", "")),
        str(i.get("health") or "") if i["state"] == "running" else "-",
        float(i.get("started") or 0.0),
        str(i.get("address", "")),
        str(i.get("node", "")),
        str(i.get("evicted", "")),
    )
