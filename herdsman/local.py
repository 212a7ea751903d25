"""The agent's operations, run in this process: what a command uses when no agent runs.

`LocalStack` has the methods of `client.AgentClient` that change or check what runs — `deploy`,
`rollback`, `scale`, `verify` — with the same arguments and results, so a command is written once
and the choice
"through the agent" or "here" is made once, by `herdsman.facade`. Here, the deploy lock keeps two
deployers of one environment apart; an agent that starts meanwhile waits for it, then lists again
before it heals anything (the state store's generation moved).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from herdsman.deploy.run import Deployment
from herdsman.image.progress import Reporter
from herdsman.spec import Project
from herdsman.state import Release


class LocalStack:
    def __init__(
        self,
        project: Project,
        env: str | None = None,
        *,
        driver_name: str | None = None,
        reporter: Reporter | None = None,
        wait: float = 0.0,
    ) -> None:
        self.project, self.env, self.driver_name, self.reporter = project, env, driver_name, reporter
        self.wait = wait  # seconds to wait for another deployer of the environment
        self._deployment: Deployment | None = None

    @property
    def deployment(self) -> Deployment:
        """The environment's deployment, wired to the router (started on first use, not before:
        `verify` alone starts nothing)."""
        if self._deployment is None:
            self._deployment = Deployment.open(
                self.project, self.env, driver_name=self.driver_name, reporter=self.reporter
            )
        return self._deployment

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._deployment is not None:
            self._deployment.state.close()

    def deploy(
        self,
        secrets: Mapping[str, str],
        on_progress: Callable[[str], None] | None = None,
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        """As `AgentClient.deploy`: bake, record a release and roll it out, here."""
        with self.deployment.executor.listening(on_progress):
            release = asyncio.run(self.deployment.deploy(wait=self.wait, secrets=secrets, force=force))
        return _summary(release)

    def rollback(
        self,
        release: int | None,
        secrets: Mapping[str, str],
        on_progress: Callable[[str], None] | None = None,
        *,
        restore_data: bool = False,
    ) -> dict[str, Any]:
        """As `AgentClient.rollback`."""
        from herdsman.deploy import data

        deployment = self.deployment
        with deployment.executor.listening(on_progress):
            new = asyncio.run(
                data.rollback(deployment, release, restore_data=restore_data, wait=self.wait, secrets=secrets)
            )
        return _summary(new)

    def scale(self, service: str, replicas: int | None) -> dict[str, Any]:
        """As `AgentClient.scale`: record the count (runtime state, an event) and converge now.
        Nothing keeps the count afterwards: that is the agent's job."""
        deployment = self.deployment
        deployment.set_replicas(service, replicas)
        asyncio.run(deployment.converge(wait=self.wait))
        current = deployment.state.current_release(deployment.env)
        scale = deployment.state.scales(deployment.env).get(service)
        config = current.services()[service].config if current and service in current.services() else None
        wanted = scale[0] if scale else (config.replicas if config else 0)
        running = asyncio.run(
            deployment.driver.list({**deployment.executor.target.selector, "herd.service": service})
        )
        return {
            "replicas": wanted,
            "set_by": "herd scale" if scale and scale[1] == "fixed" else "release",
            "running": sum(1 for i in running if i.state == "running"),
            "note": "",
        }

    def verify(self) -> list[dict[str, Any]]:
        """As `AgentClient.verify`, but only reported: replacing what drifted is the agent's job."""
        from herdsman.deploy.verify import verify_instances

        deployment = self._deployment or Deployment(self.project, self.env, driver_name=self.driver_name)
        return [
            {
                "instance": f.instance,
                "service": f.service,
                "release": f.release,
                "action": "reported",
                "drift": [{"what": d.what, "detail": d.detail} for d in f.drifts],
                "unchecked": [{"what": d.what, "detail": d.detail} for d in f.unchecked],
            }
            for f in asyncio.run(verify_instances(deployment))
        ]


def _summary(release: Release) -> dict[str, Any]:
    return {"number": release.number, "copy_of": release.copy_of, "status": release.status}
