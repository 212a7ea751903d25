"""The agent's operations, run in this process: what a command uses when no agent runs.

`LocalStack` has the methods of `client.AgentClient` that change what runs — `deploy` and
`rollback` — with the same arguments and results, so a command is written once and the choice
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
        self.deployment = Deployment.open(project, env, driver_name=driver_name, reporter=reporter)
        self.wait = wait  # seconds to wait for another deployer of the environment

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.deployment.state.close()

    def deploy(
        self, secrets: Mapping[str, str], on_progress: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """As `AgentClient.deploy`: bake, record a release and roll it out, here."""
        with self.deployment.executor.listening(on_progress):
            release = asyncio.run(self.deployment.deploy(wait=self.wait, secrets=secrets))
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


def _summary(release: Release) -> dict[str, Any]:
    return {"number": release.number, "copy_of": release.copy_of, "status": release.status}
