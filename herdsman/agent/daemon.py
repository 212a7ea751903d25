"""The agent process: deploy on start, resume an interrupted rollout, keep the release running.

The agent may die at any moment (DESIGN.md principle 3): instances and the router are separate
processes and keep serving. A new agent takes the per-environment agent lock, finishes any rollout
its predecessor left half done (by planning again from what actually runs), and then reconciles in
a loop: an instance of the current release that exited is replaced. (Quarantine, autoscaling and
drift checks build on this loop.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from herdsman.deploy.execute import Pools
from herdsman.deploy.pidlock import lock_holder, pid_lock
from herdsman.deploy.run import Deployment, deploy_lock
from herdsman.errors import HerdError
from herdsman.image.progress import Reporter
from herdsman.spec import Project, herd_home


def agent_lock(home: Path, env: str) -> contextlib.AbstractContextManager[None]:
    """One agent per environment; the kernel releases the lock when the agent dies."""
    return pid_lock(
        home / "run" / f"agent-{env}.pid",
        lambda holder: HerdError(
            f"an agent for environment {env!r} is already running (pid {holder})",
            hint="`herd down` stops it and the instances; `herd deploy` deploys through the running one",
        ),
    )


def agent_pid(home: Path, env: str) -> int | None:
    """The pid of the running agent of ``env``, if there is one."""
    return lock_holder(home / "run" / f"agent-{env}.pid")


class Agent:
    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        pools: Pools | None = None,
        reporter: Reporter | None = None,
        interval: float = 1.0,
    ) -> None:
        self.deployment = Deployment(project, env, pools=pools, reporter=reporter)
        self.env = self.deployment.env
        self.home = herd_home(project)
        self.interval = interval
        self.stopping = asyncio.Event()

    async def run(self, *, deploy: bool = True, ready: asyncio.Event | None = None) -> None:
        with agent_lock(self.home, self.env):
            state = self.deployment.state
            state.event(self.env, "agent", f"agent started (pid {os.getpid()})")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stopping.set)
            await self.deployment.resume()
            if deploy:
                await self.deployment.deploy(trigger="herd up")
            if ready is not None:
                ready.set()
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.interval)
                if not self.stopping.is_set():
                    await self.reconcile()
            state.event(self.env, "agent", "agent stopped; instances and router keep running")

    async def reconcile(self) -> None:
        """One pass: bring what runs back to the current release (replaces exited instances)."""
        current = self.deployment.state.current_release(self.env)
        if current is None:
            return
        try:
            with deploy_lock(self.home, self.env):
                if self.deployment.state.unfinished_rollouts(self.env):
                    await self.deployment.resume_locked()
                    return
                steps = await self.deployment.executor.plan(current)
                if steps:
                    self.deployment.state.event(
                        self.env, "heal", f"{len(steps)} step(s) to restore release {current.number}"
                    )
                    for step in steps:
                        await self.deployment.executor.apply(step, current)
        except HerdError as exc:  # a failed pass is reported and tried again next pass; the agent lives on
            if not exc.retryable:
                self.deployment.state.event(
                    self.env, "heal", f"could not restore release {current.number}: {exc.message}"
                )
