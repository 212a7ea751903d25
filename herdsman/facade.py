"""What the faces (the CLI, a script) call: one place that decides *where* an operation runs.

When an agent runs for the environment it owns what runs, so an operation that changes it goes
through the agent's API (`client.AgentClient`); otherwise it runs in this process
(`local.LocalStack`), with the same methods. Either way the caller bakes here first, so the bake's
progress shows where the user is and the agent's own bake finds every layer cached.

    from herdsman.facade import open_stack, declared_secrets
    with open_stack(project) as stack:
        stack.deploy(declared_secrets(project), on_progress=print)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from herdsman.agent.daemon import agent_pid
from herdsman.client import AgentClient
from herdsman.image.progress import Reporter
from herdsman.local import LocalStack
from herdsman.spec import Project, herd_home

Stack = AgentClient | LocalStack


def environment_of(project: Project, env: str | None) -> str:
    return env or project.stack.stack.environment


def agent_running(project: Project, env: str | None = None) -> int | None:
    """The pid of the agent of ``env``, if one runs."""
    return agent_pid(herd_home(project), environment_of(project, env))


def open_stack(
    project: Project,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    reporter: Reporter | None = None,
    wait: float = 0.0,
) -> Stack:
    """The running agent of ``env`` if there is one, else this process."""
    name = environment_of(project, env)
    if agent_running(project, name) is not None:
        return AgentClient.for_home(herd_home(project), name)
    return LocalStack(project, name, driver_name=driver_name, reporter=reporter, wait=wait)


def bake_here(project: Project, reporter: Reporter | None = None) -> None:
    """Bake every service of the project in this process (a no-op when nothing changed)."""
    from herdsman.image.bake import bake

    bake(project, None, reporter=reporter)


def declared_secrets(project: Project, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of the secrets the stack declares, from ``environ`` (default: this process's):
    what a deploy hands to whoever starts the instances. Undeclared variables never leave."""
    source = os.environ if environ is None else environ
    names = {name for service in project.stack.service.values() for name in service.secrets}
    return {name: source[name] for name in sorted(names) if name in source}
