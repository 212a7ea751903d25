"""Which driver and settings an environment runs with, and the deploy lock that keeps two
changes of one environment apart.

A preview runs with its stack's environment's settings (the same driver, engine and registry as
the release it was made from); every other environment with its own `[environment.NAME]`. The
driver of an environment is the one chosen on the command line, else the one its instances were
started with (recorded by the last deploy), else herd.toml's. A deploy lock (an flock on
`.herd/run/deploy-ENV.lock`) is dropped by the kernel when its holder dies, so a killed deploy
never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from herdsman.deploy.instances import is_preview
from herdsman.deploy.pidlock import pid_lock
from herdsman.drivers.base import Driver
from herdsman.errors import DeployError
from herdsman.image.bake import image_store
from herdsman.spec import Project


def deploy_lock(
    home: Path, env: str, wait: float = 0.0, task: str = "deploy"
) -> contextlib.AbstractContextManager[None]:
    """Keeps two changes of one environment (deploys, rollbacks, prunes) from interleaving."""

    def busy(holder: str) -> DeployError:
        pid, _, what = holder.partition(" ")
        return DeployError(
            f"another {what or 'deploy'} of environment {env!r} is running (pid {pid})",
            hint="wait for it to finish, or pass --wait SECONDS",
            delay=0.2,  # a rollout step is short: look again soon
        )

    return pid_lock(home / "run" / f"deploy-{env}.lock", busy, wait, task)


def make_driver(name: str, home: Path, project: Project, env: str | None = None) -> Driver:
    """The driver ``name`` for an environment of ``project`` (see `drivers.registry`)."""
    from herdsman.drivers.registry import make_driver as registered

    environment = project.stack.environment.get(settings_of(project, env))
    return registered(name, home, image_store(project), environment)


def settings_of(project: Project, env: str | None) -> str:
    """Whose `[environment.NAME]` settings ``env`` runs with: its own, a preview its stack's
    (production's: the same driver, engine and registry as the release it was made from)."""
    name = env or project.stack.stack.environment
    return project.stack.stack.environment if is_preview(name) else name


def declared_driver(project: Project, env: str) -> str:
    """The driver herd.toml gives ``env`` (`[environment.ENV] driver`, default process)."""
    environment = project.stack.environment.get(settings_of(project, env))
    return environment.driver if environment else "process"


def choose_driver(project: Project, env: str, chosen: str | None = None, recorded: str | None = None) -> str:
    """The driver of ``env``: ``chosen`` (`herd --driver`), else the one its instances were
    started with (recorded by the last deploy, until `herd down`), else herd.toml's."""
    return chosen or recorded or declared_driver(project, env)
