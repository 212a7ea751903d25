"""Where an operation runs: one place that decides between the agent and this process.

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
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from herdsman.agent.pidfile import agent_pid
from herdsman.client import AgentClient
from herdsman.errors import HerdError
from herdsman.image.progress import Reporter
from herdsman.spec import Project, herd_home
from herdsman.state import StateStore

if TYPE_CHECKING:  # the deploy machinery is imported only where an operation runs here
    from herdsman.local import LocalStack

Stack: TypeAlias = "AgentClient | LocalStack"


def environment_of(project: Project, env: str | None) -> str:
    return env or project.stack.stack.environment


def agent_running(project: Project, env: str | None = None) -> int | None:
    """The pid of the agent of ``env``, if one runs."""
    return agent_pid(herd_home(project), environment_of(project, env))


def keeper_of(project: Project, env: str | None = None) -> str:
    """The environment whose agent keeps ``env`` running: a preview's is its stack's environment's
    (that agent heals and quarantines every live preview), any other environment its own."""
    from herdsman.deploy.instances import is_preview

    name = environment_of(project, env)
    return project.stack.stack.environment if is_preview(name) else name


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
    from herdsman.local import LocalStack

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


@dataclass(frozen=True)
class Stopped:
    """What `stop_stack` did."""

    agent: int | None  # the pid of the agent it stopped
    instances: int
    router: bool  # the router was stopped too (no environment routes through it any more)


def start_agent(
    project: Project,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    deploy: bool = True,
    api: str | None = None,
    timeout: float = 600.0,
) -> tuple[int, Path]:
    """Start the agent of ``env`` in the background (its own session: it outlives this process) and
    wait until it says it is ready (its first deploy done). Returns its pid and its log. If it
    stops first, the error carries the last lines of its log, which say why."""
    name = environment_of(project, env)
    home = herd_home(project)
    running = agent_pid(home, name)
    if running is not None:
        raise HerdError(
            f"an agent for environment {name!r} is already running (pid {running})",
            hint="`herd deploy` deploys through it; `herd down` stops it and the instances",
        )
    log = home / "logs" / f"agent-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "herdsman", "-f", str(project.file)]
    argv += ["--driver", driver_name] if driver_name else []
    argv += ["up", "--env", name] + ([] if deploy else ["--no-deploy"]) + (["--api", api] if api else [])
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    state = StateStore(home / "state.db")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            with log.open("rb") as handle:
                handle.seek(start)
                said = handle.read().decode(errors="replace").strip().splitlines()
            why = "\n".join(line for line in said[-12:] if line.strip()) or "(it said nothing)"
            raise HerdError(
                f"the agent stopped (exit {child.returncode}):\n{why}", hint=f"its whole log: {log}"
            )
        if agent_pid(home, name) == child.pid and any(
            e["kind"] == "agent" and e["message"] == f"agent ready (pid {child.pid})"
            for e in state.events(name, last=50)
        ):
            return child.pid, log
        time.sleep(0.1)
    raise HerdError(
        f"the agent (pid {child.pid}) did not say it was ready within {timeout:g}s", hint=f"see {log}"
    )


def stop_stack(project: Project, env: str | None = None, *, driver_name: str | None = None) -> Stopped:
    """`herd down`: the agent first (so it does not replace what is being stopped), then every
    instance of the environment (each with its release's stop_grace), then the router if no
    environment routes through it any more, and the log stamper if no process instance is left.
    Volumes, logs and releases stay."""
    import asyncio
    import signal

    from herdsman.deploy.run import Deployment
    from herdsman.drivers.stamping import release_stamper
    from herdsman.router.engines import release_router

    name = environment_of(project, env)
    home = herd_home(project)
    pid = agent_pid(home, name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if agent_pid(home, name) is None:
                break
            time.sleep(0.1)
    deployment = Deployment(project, name, driver_name=driver_name)
    count = asyncio.run(deployment.down())
    stopped_router = release_router(project, name)
    release_stamper(home)
    return Stopped(pid, count, stopped_router)


def run_agent(
    project: Project,
    env: str | None = None,
    *,
    driver_name: str | None = None,
    api: str | None = None,
    deploy: bool = True,
    on_start: Callable[[str], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """`herd up` in the foreground: run the agent of ``env`` in this process until it is stopped.
    ``on_start(env)`` is called before it starts, ``on_ready()`` once its first deploy is done
    (when it also records "agent ready", which `start_agent` waits for)."""
    import asyncio

    from herdsman.agent.daemon import Agent

    agent = Agent(project, env, api=api, driver_name=driver_name)
    if on_start is not None:
        on_start(agent.env)

    async def run() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(agent.run(deploy=deploy, ready=ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            agent.deployment.state.event(agent.env, "agent", f"agent ready (pid {os.getpid()})")
            if on_ready is not None:
                on_ready()
        waiting.cancel()
        await task

    asyncio.run(run())


def up_starts_from(project: Project, env: str | None = None) -> str:
    """What `herd up` will run, in words: the current release, the last stopped one, or (no release
    at all) the files deployed as release 1 (see `deploy.run.starting_point`)."""
    from herdsman.deploy.run import starting_point

    state = StateStore(herd_home(project) / "state.db")
    return starting_point(state, environment_of(project, env))[1]


def current_release_number(project: Project, env: str | None = None) -> int | None:
    """The number of the release now serving ``env`` (None: nothing deployed)."""
    current = StateStore(herd_home(project) / "state.db").current_release(environment_of(project, env))
    return current.number if current is not None else None


def stack_warnings(project: Project) -> list[str]:
    """What `herd check` warns about (it still succeeds), one ``file: key: message (hint)`` line each."""
    from herdsman.spec.rules import stack_warnings as warnings_of

    return [f"{project.file}: {w.render()} (hint: {w.hint})" for w in warnings_of(project.stack)]


def deployed_image(project: Project, env: str | None, service: str) -> tuple[str, int, str] | None:
    """The image ``service`` runs in ``env``: (digest, release number, environment), from the current
    release (None: no release yet, or the service is not in it). What `herd push SERVICE` sends."""
    name = environment_of(project, env)
    current = StateStore(herd_home(project) / "state.db").current_release(name)
    if current is None or service not in current.services():
        return None
    return current.services()[service].image, current.number, name
